"""Pure domain rules: manifest, lifecycle states, permissions, versions. No I/O here."""
