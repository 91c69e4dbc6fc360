"""The runtime: base model resolution, the team model (one base + N adapters) and rollout backends.
Heavy imports (torch, transformers, peft) happen inside the functions that need them."""
