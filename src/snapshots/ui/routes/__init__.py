"""The console's routes: one module per screen, each with a `router`."""
