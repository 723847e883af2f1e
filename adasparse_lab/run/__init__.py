"""One run: build it from its config, fit, evaluate, measure, write its outputs."""
