"""Bot supervision: runtimes (Docker, local process), restart policy, health, tenant secrets."""
