"""Processing: run mercure-compatible modules on routed series and studies."""
