"""babysit.train"""
