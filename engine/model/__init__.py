"""model stage"""
