"""The development harness: provider simulator, local stack, embedded Redis, demo. Never imported by production code."""
