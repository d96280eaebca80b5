"""`keyturn worker` and `keyturn zone keygen`: the commands run on a zone worker's machine."""
from __future__ import annotations

from pathlib import Path

import click

from shared.broker import make_broker, rotate_queue
from shared.bus import check_bus
from shared.errors import KeyturnError
from shared.logs import configure_logging
from shared.metrics import MetricsServer, metrics_options
from shared.bounded import ZONE_NAME
from shared.settings import load_settings
from shared.zonecrypto import encode_public_key, generate_private_key, read_private_key, write_private_key


@click.command()
@click.option("--zone", "zones", multiple=True, required=True, metavar="NAME",
              help="A zone whose queue (rotate.NAME) this worker consumes; repeatable.")
@metrics_options
def worker(zones, metrics_port, metrics_address):
    """Run a zone worker: rotate the secrets the controller sends to these zones."""
    from worker.agent import run_worker

    settings = load_settings()
    if settings.embedded:
        raise click.ClickException("no KEYTURN_BROKER_URL: without a broker the embedded mode "
                                   "runs the worker inside `keyturn serve`")
    configure_logging(settings)
    broker = make_broker(settings.broker_url, settings.broker_tls, worker=True)
    check_bus(broker, [rotate_queue(zone) for zone in zones])
    if metrics_port is not None:
        MetricsServer(metrics_port, metrics_address).start()
    run_worker(settings, list(zones), broker)


@click.command("keygen")
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the private key (default: KEYTURN_ZONE_KEY_FILE or "
                   "<data dir>/zones/NAME.key).")
def zone_keygen(name, out):
    """Make the zone's private key (kept if it exists) and print its public key."""
    if not ZONE_NAME.match(name):
        raise KeyturnError(f"zone name {name!r}: use lowercase ASCII letters, digits, - and _")
    path = out or load_settings().zone_key_path(name)
    if path.exists():
        click.echo(f"kept the existing zone key {path}", err=True)
    else:
        write_private_key(path, generate_private_key())
        click.echo(f"zone private key written to {path} (mode 0600)", err=True)
    public_key = encode_public_key(read_private_key(path).public_key)
    click.echo(public_key)
    click.echo(f"register it on the controller: keyturn zone add {name} --public-key {public_key}",
               err=True)
