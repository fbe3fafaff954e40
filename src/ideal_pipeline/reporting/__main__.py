from ideal_pipeline.reporting.cli import main

main()
