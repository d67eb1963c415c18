"""Fetch every message over verified TLS (STLS), print a one-line summary of each.

    python examples/fetch_new.py HOST PORT USER CAFILE      (password in $POP_PASSWORD)
"""

import os
import sys

import fastpoplib

host, port, user, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

with fastpoplib.POP3(host, port, timeout=30) as pop:
    pop.stls(cafile=cafile)                       # verified; CAPA is re-read after the upgrade
    pop.login(user, os.environ["POP_PASSWORD"])   # strongest mechanism the server offers
    print("logged in with", pop.auth_mechanism)
    infos = pop.messages()                        # LIST + UIDL in one round trip
    for number, (_resp, lines, octets) in pop.retr_many(i.number for i in infos):
        subject = next((line for line in lines if line.lower().startswith(b"subject:")), b"Subject: ?")
        print(number, octets, subject.decode("utf-8", "replace"))
