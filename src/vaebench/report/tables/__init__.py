"""The report's tables, one module per kind: results, comparisons, diagnostics."""
