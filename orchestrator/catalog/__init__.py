"""The plugin catalog: publishing, discovery, resolution."""
