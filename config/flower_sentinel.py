"""Flower's Celery configuration in docker-compose.sentinel.yml: the Redis broker through the three sentinels."""

broker_url = "sentinel://sentinel-1:26379;sentinel://sentinel-2:26379;sentinel://sentinel-3:26379"
broker_transport_options = {"master_name": "aew"}
