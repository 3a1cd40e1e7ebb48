from hub.main import main

main()
