"""Where runs happen: one small interface (`RunnerBackend`) and a backend per sandbox kind."""
