"""training stage"""
