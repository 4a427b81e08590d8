"""amqprouter: an AMQP 0.9.1 router that sends each client connection to a broker by vhost."""

__version__ = "0.1.0"
