"""babysit.search"""
