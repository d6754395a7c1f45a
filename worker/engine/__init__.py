"""The evaluation engine shared by the CLI, the service and validate: decode -> features -> SER -> pair rows, the
side reading, corpus metrics, the report and its schema, comparisons.
"""
