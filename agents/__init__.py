"""community-pulse shell: Faust app and agents, Redis and Kafka adapters, metrics, CLI."""
