"""Resource sampling, quotas and Prometheus metrics."""
