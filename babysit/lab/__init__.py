"""babysit.lab"""
