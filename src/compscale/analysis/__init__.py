"""Tables, figures and reports built on the core (they never reach into model internals)."""
