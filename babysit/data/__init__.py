"""babysit.data"""
