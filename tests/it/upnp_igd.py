#!/usr/bin/env python3
"""A home router's UPnP Internet Gateway Device for the NAT lab (tests/it/common/lab.rs).

Runs inside a lab router's namespace: answers SSDP searches on the LAN (239.255.255.250:1900),
serves the device and service descriptions over HTTP on the LAN gateway address, and handles
the WANIPConnection:1 SOAP actions a port-mapping client uses (GetExternalIPAddress,
AddAnyPortMapping, AddPortMapping, DeletePortMapping) by adding the nftables rules a router
would: a DNAT of the external port to the asking host, and a SNAT of that host's port to the
external one, ahead of the router's masquerade.

Why not miniupnpd (Debian's package): it refuses to map on a WAN address in a documentation
range (198.51.100.0/24), and the lab's internet may use nothing else. Why UPnP and not NAT-PMP:
iroh 1.4's port mapper asks UPnP unless a probe has found PCP or NAT-PMP, and iroh never
probes. Each mapping is logged on stdout ("mapped udp 198.18.1.2:1234 -> 198.51.100.21:1234").
"""
import argparse
import http.server
import re
import socket
import struct
import subprocess
import threading

SERVICE = "urn:schemas-upnp-org:service:WANIPConnection:1"
DEVICE = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
UUID = "uuid:8d2c1a4e-0000-4000-8000-6d6573686c61"
HTTP_PORT = 5000

ROOT_DESC = f"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>{DEVICE}</deviceType><friendlyName>lab router</friendlyName><UDN>{UUID}</UDN>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><UDN>{UUID}-1</UDN>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><UDN>{UUID}-2</UDN>
<serviceList><service><serviceType>{SERVICE}</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<SCPDURL>/WANIPCn.xml</SCPDURL><controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>"""

MAPPING_ARGS = ["NewRemoteHost", "NewExternalPort", "NewProtocol", "NewInternalPort",
                "NewInternalClient", "NewEnabled", "NewPortMappingDescription", "NewLeaseDuration"]


def action(name, ins, outs):
    args = "".join(f"<argument><name>{a}</name><direction>in</direction></argument>" for a in ins)
    args += "".join(f"<argument><name>{a}</name><direction>out</direction></argument>" for a in outs)
    return f"<action><name>{name}</name><argumentList>{args}</argumentList></action>"


SCPD = ('<?xml version="1.0"?><scpd xmlns="urn:schemas-upnp-org:service-1-0"><actionList>'
        + action("GetExternalIPAddress", [], ["NewExternalIPAddress"])
        + action("AddPortMapping", MAPPING_ARGS, [])
        + action("AddAnyPortMapping", MAPPING_ARGS, ["NewReservedPort"])
        + action("DeletePortMapping", ["NewRemoteHost", "NewExternalPort", "NewProtocol"], [])
        + "</actionList></scpd>")


def soap(name, body=""):
    return ('<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
            's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
            f'<u:{name}Response xmlns:u="{SERVICE}">{body}</u:{name}Response></s:Body></s:Envelope>')


def field(xml, name):
    m = re.search(rf"<{name}>([^<]*)</{name}>", xml)
    return m.group(1) if m else ""


class Router:
    def __init__(self, lan_ip, wan_ip):
        self.lan_ip, self.wan_ip = lan_ip, wan_ip
        self.mapped = set()
        self.lock = threading.Lock()
        nft("add", "table", "ip", "upnp")
        # Hooked just before the lab's NAT chains (priorities -100 / 100): a mapping wins.
        nft("add", "chain", "ip", "upnp", "pre", "{ type nat hook prerouting priority -101; }")
        nft("add", "chain", "ip", "upnp", "post", "{ type nat hook postrouting priority 99; }")

    def map(self, proto, host, port, ext):
        with self.lock:
            if (proto, host, port) in self.mapped:
                return
            nft("add", "rule", "ip", "upnp", "pre", "iifname", "wan", proto, "dport", str(ext),
                "dnat", "to", f"{host}:{port}")
            nft("add", "rule", "ip", "upnp", "post", "oifname", "wan", "ip", "saddr", host, proto,
                "sport", str(port), "snat", "to", f"{self.wan_ip}:{ext}")
            self.mapped.add((proto, host, port))
            print(f"mapped {proto} {host}:{port} -> {self.wan_ip}:{ext}", flush=True)


def nft(*args):
    subprocess.run(["nft", *args], check=True)


def http_handler(router):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def reply(self, body, status=200):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", 'text/xml; charset="utf-8"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            docs = {"/rootDesc.xml": ROOT_DESC, "/WANIPCn.xml": SCPD}
            self.reply(docs.get(self.path, ""), 200 if self.path in docs else 404)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            name = self.headers.get("SOAPAction", "").strip('"').split("#")[-1]
            if name == "GetExternalIPAddress":
                return self.reply(soap(name, f"<NewExternalIPAddress>{router.wan_ip}</NewExternalIPAddress>"))
            if name in ("AddPortMapping", "AddAnyPortMapping"):
                proto = field(body, "NewProtocol").lower()
                port, ext = int(field(body, "NewInternalPort")), int(field(body, "NewExternalPort"))
                router.map(proto, field(body, "NewInternalClient"), port, ext)
                out = f"<NewReservedPort>{ext}</NewReservedPort>" if name == "AddAnyPortMapping" else ""
                return self.reply(soap(name, out))
            if name == "DeletePortMapping":
                return self.reply(soap(name))
            self.reply("", 500)

    return Handler


def ssdp(router):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 1900))
    group = struct.pack("4s4s", socket.inet_aton("239.255.255.250"), socket.inet_aton(router.lan_ip))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
    while True:
        data, peer = sock.recvfrom(2048)
        text = data.decode(errors="replace")
        if not text.startswith("M-SEARCH") or "ssdp:discover" not in text:
            continue
        answer = ("HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nEXT:\r\n"
                  f"LOCATION: http://{router.lan_ip}:{HTTP_PORT}/rootDesc.xml\r\n"
                  "SERVER: lab/1.0 UPnP/1.1 igd/1.0\r\n"
                  f"ST: {DEVICE}\r\nUSN: {UUID}::{DEVICE}\r\n\r\n")
        sock.sendto(answer.encode(), peer)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lan-ip", required=True, help="the router's LAN address (the gateway)")
    ap.add_argument("--wan-ip", required=True)
    args = ap.parse_args()
    router = Router(args.lan_ip, args.wan_ip)
    server = http.server.ThreadingHTTPServer((args.lan_ip, HTTP_PORT), http_handler(router))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Thread(target=ssdp, args=(router,), daemon=True).start()
    print("listening", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
