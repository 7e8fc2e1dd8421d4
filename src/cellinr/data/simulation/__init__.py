"""data/simulation"""
