from amqprouter.cli import main

main()
