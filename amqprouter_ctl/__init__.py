"""amqprouter_ctl: send one control command to a running amqprouter."""
