from lcgen.cli import app

app(prog_name="lcgen")
