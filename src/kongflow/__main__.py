from kongflow.cli import app

app(prog_name="kongflow")
