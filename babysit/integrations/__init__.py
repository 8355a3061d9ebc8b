"""The Monitor inside the training loops people use: `babysit.integrations.lightning` and
`babysit.integrations.transformers` each hold a `MonitorCallback` (optional extras:
`pip install 'babysit[lightning]'`, `pip install 'babysit[transformers]'`)."""
