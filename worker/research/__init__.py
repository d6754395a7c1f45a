"""Paper research: reproducing the paper's tables (reproduce), the validity protocol (validate), dataset adapters."""
