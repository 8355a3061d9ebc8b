"""babysit.checks"""
