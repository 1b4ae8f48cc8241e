"""Training code for the four methods: one engine, a method plug-in per model."""
