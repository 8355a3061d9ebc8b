"""babysit.report"""
