"""serving stage"""
