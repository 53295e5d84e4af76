"""Operations: what the system is doing right now (queue depths, backlog, status) for operators,
`colmena status` and the ingress's Prometheus gauges."""
