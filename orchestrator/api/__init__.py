"""HTTP API: thin routers that call services. No Docker or SQL here."""
