"""Graph transformations, one module per pass family (the table of pass names: qpass.pipeline.registry)."""
