"""HTTP layer: one blueprint per resource, thin handlers over the services."""
