#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (tests/fuzz/corpus/<target>/)
and the dictionaries (tests/fuzz/<target>.dict).

The seeds are small, valid conversations of each kind: every ClientFrame
request type through the gateway, an RPC request for every service method,
Redis bus messages, and each client command; plus a few broken ones (an
oversized header, invalid UTF-8, a wrong protocol version). Protobuf is
encoded by hand here (field numbers from proto/*.proto), so the script needs
nothing but Python. Run it again after changing the protos; the output is
the same each time (file names are the seed names).

    python3 tests/fuzz/make_corpus.py [OUTDIR]   (default: tests/fuzz)
"""
import hashlib
import os
import struct
import sys

# ---- protobuf, by hand ----


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def u(field, n):
    """A varint field (uint32/uint64/bool/enum); zero is left out as proto3 does."""
    return key(field, 0) + varint(n) if n else b""


def ld(field, data):
    """A length-delimited field: string, bytes or an embedded message."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return key(field, 2) + varint(len(data)) + data


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


# ---- parley.proto: ClientFrame ----

PROTOCOL_VERSION = 1


def client(req_id, field, body):
    return u(1, req_id) + ld(field, body)


def hello(i, version=PROTOCOL_VERSION):
    return client(i, 10, u(1, version) + ld(2, "fuzz/1"))


def ping(i, nonce=42):
    return client(i, 11, u(1, nonce))


def ack(conv, seq):
    return ld(12, u(1, conv) + u(2, seq))


def register(i, name, pw):
    return client(i, 20, ld(1, name) + ld(2, pw))


def login(i, name=None, pw="secret123", user_id=0):
    return client(i, 21, u(1, user_id) + (ld(2, name) if name else b"") + ld(3, pw))


def resume(i, token):
    return client(i, 22, ld(1, token))


def logout(i, everywhere=False):
    return client(i, 23, u(2, 1 if everywhere else 0))


def friend_add(i, uid):
    return client(i, 30, u(1, uid))


def friend_del(i, uid):
    return client(i, 31, u(1, uid))


def friend_list(i):
    return client(i, 32, b"")


def group_create(i, name, desc):
    return client(i, 40, ld(1, name) + ld(2, desc))


def group_join(i, gid):
    return client(i, 41, u(1, gid))


def group_quit(i, gid):
    return client(i, 42, u(1, gid))


def group_delete(i, gid):
    return client(i, 43, u(1, gid))


def send_direct(i, to, body):
    return client(i, 50, u(1, to) + ld(2, body))


def send_group(i, gid, body):
    return client(i, 51, u(1, gid) + ld(2, body))


def history(i, peer=0, group=0, limit=0, before=0):
    return client(i, 52, u(1, peer) + u(2, group) + u(3, limit) + u(4, before))


def recall(i, msgid):
    return client(i, 53, u(1, msgid))


def whois(i, user_id=0, name=""):
    return client(i, 33, u(1, user_id) + (ld(2, name) if name else b""))


def file_begin(i, name, data, type_="image/png", size=None, sha=None):
    return client(i, 60, ld(1, name) + u(2, len(data) if size is None else size) + ld(3, type_)
                  + ld(4, hashlib.sha256(data).digest() if sha is None else sha))


def file_chunk(i, upload_id, offset, data):
    return client(i, 61, u(1, upload_id) + u(2, offset) + ld(3, data))


def file_get(i, msgid, offset=0, limit=0):
    return client(i, 62, u(1, msgid) + u(2, offset) + u(3, limit))


def send_file(i, to, data, body="", group=False):
    att = ld(4, ld(1, hashlib.sha256(data).digest()))
    return client(i, 51 if group else 50, u(1, to) + (ld(2, body) if body else b"") + att)


# A small file the seeds upload (fuzz_gateway takes files up to 1 MiB).
FILE = bytes(range(256)) * 12


def stream(*payloads):
    return b"".join(frame(p) for p in payloads)


def as_alice(*payloads):
    """Hello and log in as alice (user 2, made by fuzz_gateway at its start)."""
    return stream(hello(1), ping(2), login(3, "alice"), *payloads)


# fuzz_gateway's first byte (FZ_MODE_* in fuzz_gateway.c).
WAIT_AUTH, WAIT_EACH, HANG_UP, DRIBBLE, TLS, TLS_RAW = 1, 2, 4, 8, 16, 32


def tls_client_hello():
    """A TLS 1.3 ClientHello (x25519, ECDSA P-256, fixed random and key share):
    the start of a handshake with the gateway's TLS port, the same bytes each
    time."""

    def vec(n, data):  # a TLS vector with an n-byte length
        return len(data).to_bytes(n, "big") + data

    def ext(kind, data):
        return struct.pack(">H", kind) + vec(2, data)

    exts = (
        ext(0x002B, vec(1, b"\x03\x04\x03\x03"))  # supported_versions
        + ext(0x000A, vec(2, b"\x00\x1d\x00\x17"))  # supported_groups
        + ext(0x000D, vec(2, b"\x04\x03\x08\x04\x04\x01"))  # signature_algorithms
        + ext(0x0033, vec(2, b"\x00\x1d" + vec(2, bytes(range(1, 33)))))  # key_share
    )
    body = (
        b"\x03\x03"
        + bytes(range(32, 64))  # random
        + vec(1, b"")  # session id
        + vec(2, b"\x13\x01\x13\x02\xc0\x2b\xc0\x2f")  # cipher suites
        + vec(1, b"\x00")  # compression
        + vec(2, exts)
    )
    hs = b"\x01" + vec(3, body)
    return b"\x16\x03\x01" + vec(2, hs)

# fuzz_gateway's accounts (fz_accounts): bob, user 1, is its resident peer,
# logged in throughout and creator of group 1; alice, carol and dave are 2-4,
# all with password secret123.
BOB, BOB_PASSWORD, LOBBY = 1, "bobsecret1", 1


def gateway_seeds():
    """Client streams, without fuzz_gateway's mode byte."""
    s = {}
    s["hello"] = stream(hello(1))
    s["hello_ping"] = stream(hello(1), ping(2))
    s["hello_bad_version"] = stream(hello(1, version=99), ping(2))
    s["ping_before_hello"] = stream(ping(1), hello(2))
    s["register"] = stream(hello(1), register(2, "erin", "hunter22"), login(3, "erin", "hunter22"))
    s["register_taken"] = stream(hello(1), register(2, "carol", "hunter22"))
    s["login_by_id"] = stream(hello(1), login(2, user_id=2), friend_list(3))
    s["login_wrong_password"] = stream(hello(1), login(2, "alice", "wrong-password"))
    s["resume_unknown_token"] = stream(hello(1), resume(2, "A" * 43), ping(3))
    s["resume_empty"] = stream(hello(1), resume(2, ""))
    s["ack_before_login"] = stream(hello(1), ack(1, 1))
    s["alice_friend_add"] = as_alice(friend_add(4, BOB), friend_list(5))
    s["alice_friend_del"] = as_alice(friend_del(4, BOB))
    s["alice_group_create"] = as_alice(group_create(4, "club", "a group"), friend_list(5))
    s["alice_group_join"] = as_alice(group_join(4, LOBBY), friend_list(5))
    s["alice_group_quit"] = as_alice(group_quit(4, LOBBY))
    s["alice_group_delete"] = as_alice(group_delete(4, 2))
    s["alice_send_direct"] = as_alice(send_direct(4, BOB, "hello bob"))
    s["alice_send_self"] = as_alice(send_direct(4, 2, "note to self"))
    s["alice_send_group"] = as_alice(group_join(4, LOBBY), send_group(5, LOBBY, "hello lobby"))
    s["alice_history"] = as_alice(history(4, peer=BOB, limit=5))
    s["alice_group_history"] = as_alice(history(4, group=LOBBY, before=3))
    s["alice_recall"] = as_alice(send_direct(4, BOB, "oops"), recall(5, 1))
    s["alice_ack"] = as_alice(ack(1, 1), ack(1, 2))
    s["alice_whois"] = as_alice(whois(4, name="bob"), whois(5, user_id=BOB), whois(6))
    s["alice_logout"] = as_alice(logout(4), login(5, "alice"))
    s["alice_logout_all"] = as_alice(logout(4, everywhere=True))
    s["alice_login_twice"] = as_alice(login(4, "alice"))
    s["alice_many_in_flight"] = as_alice(*[history(10 + i, peer=BOB) for i in range(80)])
    # A second session of the peer's account: pushes to both, then the
    # peer is kicked by logout everywhere.
    s["bob_second_session"] = stream(
        hello(1),
        login(2, user_id=BOB, pw=BOB_PASSWORD),
        send_direct(3, BOB, "to my other session"),
        send_group(4, LOBBY, "to the lobby"),
        friend_list(5),
        logout(6, everywhere=True),
    )
    s["bob_delete_lobby"] = stream(
        hello(1), login(2, "bob", BOB_PASSWORD), group_create(3, "temp", ""), group_delete(4, 3)
    )
    s["everything"] = stream(
        hello(1),
        ping(2),
        register(3, "frank", "secret123"),
        login(4, "carol"),
        friend_add(5, BOB),
        group_create(6, "team", "desc"),
        group_join(7, LOBBY),
        send_direct(8, BOB, "hi"),
        send_group(9, LOBBY, "all"),
        history(10, peer=BOB),
        history(11, group=LOBBY),
        recall(12, 1),
        ack(1, 1),
        friend_list(13),
        group_quit(14, LOBBY),
        group_delete(15, 2),
        friend_del(16, BOB),
        logout(17),
    )
    # Files: an upload in two chunks, sent and read back; a resume; the
    # hostile ones (a bad offset, a huge size, a wrong hash, someone else's
    # upload, a file of a message one is not party to).
    s["alice_file_roundtrip"] = as_alice(
        file_begin(4, "pic.png", FILE),
        file_chunk(5, 1, 0, FILE[:2000]),
        file_chunk(6, 1, 2000, FILE[2000:]),
        send_file(7, BOB, FILE, "a picture"),
        file_get(8, 1),
        file_get(9, 1, offset=1000, limit=100),
        history(10, peer=BOB),
    )
    s["alice_file_resume"] = as_alice(
        file_begin(4, "pic.png", FILE), file_chunk(5, 1, 0, FILE[:1000]),
        file_begin(6, "pic.png", FILE), file_chunk(7, 1, 1000, FILE[1000:]))
    s["alice_file_bad_offset"] = as_alice(file_begin(4, "a.bin", FILE),
                                          file_chunk(5, 1, 77, FILE[:10]))
    s["alice_file_huge"] = as_alice(file_begin(4, "huge.bin", b"", size=1 << 62, sha=b"\1" * 32))
    s["alice_file_bad_sha"] = as_alice(file_begin(4, "x.bin", FILE, sha=b"\2" * 32),
                                       file_chunk(5, 1, 0, FILE))
    s["alice_file_short_sha"] = as_alice(file_begin(4, "x.bin", FILE, sha=b"\2" * 7))
    s["alice_file_other_upload"] = as_alice(file_chunk(4, 12345, 0, b"data"), file_get(5, 99999))
    s["alice_file_attach_unknown"] = as_alice(send_file(4, BOB, b"never uploaded"))
    s["alice_file_group"] = as_alice(group_join(4, LOBBY), file_begin(5, "g.txt", FILE, "text/plain"),
                                     file_chunk(6, 1, 0, FILE),
                                     send_file(7, LOBBY, FILE, group=True), file_get(8, 1))
    s["bad_utf8_name"] = stream(hello(1), register(2, b"al\xc3\x28ce", "secret123"))
    s["nul_in_body"] = as_alice(send_direct(4, BOB, b"visible\x00hidden"))
    s["bidi_name"] = stream(hello(1), register(2, "evil\u202egnp", "secret123"))
    s["oversized_header"] = stream(hello(1)) + struct.pack(">I", 1 << 20) + b"x" * 16
    s["partial_frame"] = stream(hello(1)) + struct.pack(">I", 10) + b"abc"
    s["malformed_payload"] = stream(hello(1), b"\xff\xff\xff", ping(2))
    s["unknown_body"] = stream(hello(1), client(2, 99, b""))
    s["empty_frame"] = stream(hello(1), b"")
    return s


def gateway_corpus():
    g = gateway_seeds()
    s = {name: bytes([WAIT_AUTH]) + data for name, data in g.items()}
    s["pipelined"] = bytes([0]) + g["everything"]
    s["lockstep"] = bytes([WAIT_EACH]) + g["everything"]
    s["dribble"] = bytes([WAIT_AUTH | DRIBBLE]) + g["alice_send_direct"]
    s["hang_up_during_login"] = bytes([HANG_UP]) + stream(hello(1), login(2, "alice"))
    s["tls_alice_send_direct"] = bytes([TLS | WAIT_AUTH]) + g["alice_send_direct"]
    s["tls_everything"] = bytes([TLS | WAIT_AUTH]) + g["everything"]
    s["tls_dribble"] = bytes([TLS | WAIT_AUTH | DRIBBLE]) + g["alice_history"]
    s["tls_raw_client_hello"] = bytes([TLS_RAW]) + tls_client_hello()
    s["tls_raw_plain_frames"] = bytes([TLS_RAW]) + g["hello_ping"]
    s["hang_up_during_sends"] = bytes([WAIT_AUTH | HANG_UP]) + as_alice(
        send_direct(4, BOB, "a"), send_direct(5, BOB, "b"), history(6, peer=BOB)
    )
    return s


# ---- services.proto and rpc.proto ----


def caller(user_id, session_id=1, gateway_id=1, local_sessions=0, addr="127.0.0.1"):
    return u(1, user_id) + u(2, session_id) + u(3, gateway_id) + u(4, local_sessions) + ld(5, addr)


def call(user_id, client_frame=b"", k=0, after=0, ref=0, acks=()):
    out = ld(1, caller(user_id)) + ld(2, client_frame) + u(3, k) + u(4, after) + u(5, ref)
    for user, conv, seq in acks:
        out += ld(6, u(1, user) + u(2, conv) + u(3, seq))
    return out


def rpc_request(call_id, service, method, payload, timeout_ms=5000):
    return u(1, call_id) + ld(2, service) + ld(3, method) + u(4, timeout_ms) + ld(5, payload)


def rpc_seeds():
    """fuzz_rpc's set-up (fz_setup) made users 1-4 (alice, bob, carol, dave;
    password secret123), alice and bob friends, group 1 (alice's, bob in it)
    and a message in each of their conversations."""
    user, social, msg = "parley.UserService", "parley.SocialService", "parley.MessageService"
    reqs = {
        "user_create": (user, "CreateAccount", call(0, register(1, "erin", "secret123"))),
        "user_create_taken": (user, "CreateAccount", call(0, register(1, "alice", "x23456"))),
        "user_login": (user, "Login", call(0, login(1, "alice"))),
        "user_login_by_id": (user, "Login", call(0, login(1, user_id=2))),
        "user_resume": (user, "Resume", call(0, resume(1, "A" * 43))),
        "user_logout": (user, "Logout", call(1, client(1, 23, ld(1, "A" * 43)))),
        "user_logout_all": (user, "Logout", call(1, logout(1, everywhere=True))),
        "social_friend_add": (social, "FriendAdd", call(1, friend_add(1, 3))),
        "social_friend_del": (social, "FriendDel", call(1, friend_del(1, 2))),
        "social_friend_list": (social, "FriendList", call(1, friend_list(1))),
        "social_group_create": (social, "GroupCreate", call(3, group_create(1, "club", "d"))),
        "social_group_join": (social, "GroupJoin", call(3, group_join(1, 1), k=1)),
        "social_group_quit": (social, "GroupQuit", call(2, group_quit(1, 1), k=1)),
        "social_group_delete": (social, "GroupDelete", call(3, group_delete(1, 2), k=2)),
        "msg_send_direct": (msg, "SendDirect", call(1, send_direct(1, 2, "hi"), k=3, ref=7)),
        "msg_send_group": (msg, "SendGroup", call(1, send_group(1, 1, "all"), k=1, ref=9)),
        "msg_history": (msg, "History", call(1, history(1, peer=2, limit=10))),
        "msg_group_history": (msg, "History", call(2, history(1, group=1, before=5))),
        "msg_recall": (msg, "Recall", call(1, recall(1, 1))),
        "msg_ack": (msg, "Ack", call(0, b"", acks=[(2, 1, 1), (1, 2, 1)])),
        "msg_sync": (msg, "Sync", call(2, b"", after=0)),
        "msg_sync_after": (msg, "Sync", call(2, b"", after=1)),
    }
    s = {}
    for i, (name, (svc, method, payload)) in enumerate(sorted(reqs.items()), 1):
        s[name] = frame(rpc_request(i, svc, method, payload))
    # A whole session in one stream, as a gateway would send it.
    s["session"] = b"".join(
        frame(rpc_request(i + 1, svc, m, p))
        for i, (svc, m, p) in enumerate(
            [
                reqs["user_login"],
                reqs["social_friend_add"],
                reqs["social_group_join"],
                reqs["msg_send_direct"],
                reqs["msg_send_group"],
                reqs["msg_sync"],
                reqs["msg_ack"],
                reqs["msg_history"],
                reqs["msg_recall"],
                reqs["social_friend_list"],
            ]
        )
    )
    s["unknown_service"] = frame(rpc_request(1, "parley.Nope", "Login", b""))
    s["unknown_method"] = frame(rpc_request(1, user, "Nope", b""))
    s["malformed_payload"] = frame(rpc_request(1, user, "Login", b"\xff\xff"))
    s["expired"] = frame(rpc_request(1, msg, "History", call(1, history(1, peer=2)), 1))
    return s


# ---- the Redis bus: [u32 n][u32 len][u64 msgid][n x u64 user][frame], little endian ----


def push(users, frame_bytes, msgid=0):
    out = struct.pack("<IIQ", len(users), len(frame_bytes), msgid)
    out += b"".join(struct.pack("<Q", x) for x in users)
    return out + frame_bytes


def server_message(msgid, conv, seq, sender, to, body):
    m = u(1, msgid) + u(2, conv) + u(3, seq) + u(4, sender) + u(5, to) + ld(7, body) + u(8, 1)
    return frame(ld(100, m))


def bus_seeds():
    bye = frame(ld(104, ld(1, "logged out everywhere")))
    presence = frame(ld(103, u(1, 2) + u(2, 1)))
    return {
        "one_push": push([2], server_message(1, 1, 1, 1, 2, "hi"), 1),
        "many_users": push([1, 2, 3, 4], server_message(2, 5, 1, 1, 0, "group"), 2),
        "batch": push([2], server_message(3, 1, 2, 1, 2, "a"), 3)
        + push([1], presence)
        + push([3, 4], server_message(4, 2, 1, 3, 4, "b"), 4),
        "kick": push([1], bye, 0xFFFFFFFFFFFFFFFF),
        "truncated": push([2], server_message(1, 1, 1, 1, 2, "hi"), 1)[:-3],
        "no_users": struct.pack("<IIQ", 0, 4, 0) + b"abcd",
    }


# ---- the client's commands ----


def cmd_seeds():
    lines = [
        "help",
        "register:alice:secret123",
        "login:alice:secret123",
        "login:1:secret123",
        "chat:2:hello: how are you",
        "addfriend:2",
        "delfriend:2",
        "showfriendlist",
        "creategroup:club:a group: for friends",
        "creategroup:club",
        "addgroup:1",
        "quitgroup:1",
        "delgroup:1",
        "groupchat:1:hi all",
        "history:2",
        "history:2:50",
        "grouphistory:1:10",
        "recall:7",
        "sendfile:bob:/tmp/a: file.png",
        "groupsendfile:1:photo.jpg",
        "getfile:7:/tmp/out.bin",
        "getfile:x:/tmp/out.bin",
        "sendfile:2:",
        "whois:bob",
        "who",
        "chat:bob:by name",
        "groupchat:team:by name",
        "loginout",
        "logout:all",
        "quit",
        "# a comment",
        "  CHAT : 2 :  spaced  ",
        "history:18446744073709551615:4294967295",
        "nosuchcommand:x",
    ]
    s = {}
    for ln in lines:
        name = "".join(ch if ch.isalnum() else "_" for ch in ln)[:40].strip("_") or "line"
        s[name] = (ln + "\n").encode()
    s["script"] = ("\n".join(lines) + "\n").encode()
    s["crlf"] = b"chat:2:windows line\r\n"
    return s


def frame_seeds():
    # First byte: the size limit (5 = the gateway's 64 KiB), then a stream.
    s = {}
    for name, data in gateway_seeds().items():
        s[name] = b"\x05" + data
    s["tiny_limit"] = b"\x02" + stream(hello(1), ping(2))
    return s


# ---- dictionaries ----


def dict_line(data):
    return '"' + "".join(
        chr(b) if 0x20 <= b < 0x7F and chr(b) not in '"\\' else "\\x%02x" % b for b in data
    ) + '"'


def dictionaries():
    # Field keys of ClientFrame's bodies and of the requests inside them.
    gw = [key(1, 0)] + [key(f, 2) for f in (10, 11, 12, 20, 21, 22, 23, 30, 31, 32, 40, 41, 42,
                                              43, 50, 51, 52, 53, 33, 60, 61, 62)]
    gw += [b"\0" * 32, b"image/png"]
    gw += [key(f, w) for f in (1, 2, 3, 4) for w in (0, 2)]
    gw += [struct.pack(">I", n) for n in (0, 2, 4, 0x10000, 0x10001)]
    gw += [b"\xc3\x28", b"\xe2\x80\xae", b"\x00", b"alice", b"secret123", b"bob", b"bobsecret1"]
    rpc = gw + [x.encode() for x in (
        "parley.UserService", "parley.SocialService", "parley.MessageService",
        "CreateAccount", "Login", "Resume", "Logout", "FriendAdd", "FriendDel", "FriendList",
        "GroupCreate", "GroupJoin", "GroupQuit", "GroupDelete", "SendDirect", "SendGroup",
        "History", "Recall", "Ack", "Sync", "Whois", "FileBegin", "FileChunk", "FileGet")]
    cmd = [x.encode() for x in (
        "help", "register:", "login:", "chat:", "addfriend:", "delfriend:", "showfriendlist",
        "creategroup:", "addgroup:", "quitgroup:", "delgroup:", "groupchat:", "history:",
        "grouphistory:", "recall:", "whois:", "who", "loginout", "logout", ":all", "quit", ":",
        "sendfile:", "groupsendfile:", "getfile:",
        "#",
        "18446744073709551615", "4294967296")]
    bus = [struct.pack("<I", n) for n in (0, 1, 2, 0xFFFFFFFF)] + [b"\xff" * 8]
    return {"fuzz_gateway": gw, "fuzz_frame": gw, "fuzz_rpc": rpc, "fuzz_cmd": cmd,
            "fuzz_bus": bus}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    corpora = {
        "fuzz_gateway": gateway_corpus(),
        "fuzz_frame": frame_seeds(),
        "fuzz_rpc": rpc_seeds(),
        "fuzz_bus": bus_seeds(),
        "fuzz_cmd": cmd_seeds(),
    }
    for target, seeds in corpora.items():
        d = os.path.join(out, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
    for target, words in dictionaries().items():
        with open(os.path.join(out, target + ".dict"), "w") as f:
            f.write("# Written by make_corpus.py: pieces worth inserting whole.\n")
            for w in sorted(set(words)):
                f.write(dict_line(w) + "\n")


if __name__ == "__main__":
    main()
