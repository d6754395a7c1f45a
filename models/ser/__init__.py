"""SER heads: the head format and its predictions, and their training (data, features, fit, reports)."""
