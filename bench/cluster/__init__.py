"""Multi-node harnesses: a RabbitMQ cluster, a PostgreSQL pair, hosts in network namespaces."""
