"""tbench harness: suites -> sweeps -> isolated, trustworthy measurement -> results -> reports."""
