from amqprouter_ctl.cli import main

main()
