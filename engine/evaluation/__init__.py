"""evaluation stage"""
