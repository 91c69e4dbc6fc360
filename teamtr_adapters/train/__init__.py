"""TeamTR training: trust-region losses and exact token KL, the stage loop, the baselines and their
diagnostics. Imports torch; the CLI imports it lazily inside its commands."""
