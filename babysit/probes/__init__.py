"""babysit.probes"""
