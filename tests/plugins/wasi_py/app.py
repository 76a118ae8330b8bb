"""Test fixture: what a Python plugin gets from WASI, unmodified componentize-py output.

`GET /wasi-py/now` answers `random.random()`, `uuid.uuid4()`, `time.time()`,
`datetime.now().isoformat()` and `os.urandom(8).hex()`, after printing a line.
`GET /wasi-py/socket?port=N` tries a TCP connection to 127.0.0.1:N and answers the error.
"""

import datetime
import os
import random
import socket
import time
import uuid

from truevalue import Plugin

app = Plugin(version="0.1.0")


@app.get("/wasi-py/now")
def now(request):
    print(f"wasi-py serving {request.context.request_id}")
    return {
        "random": random.random(),
        "uuid": str(uuid.uuid4()),
        "time": time.time(),
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "urandom": os.urandom(8).hex(),
    }


@app.get("/wasi-py/socket")
def connect(request):
    # A bytes host: a str one would need the `idna` codec, which the snapshot leaves out.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as connection:
            connection.settimeout(1)
            connection.connect((b"127.0.0.1", int(request.query["port"])))
            return {"connected": True}
    except OSError as error:
        return {"connected": False, "error": str(error)}


Endpoint, Manifest = app.exports()
