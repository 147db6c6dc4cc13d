"""An independent MS-WUSP client: python zeep, loaded with the protocol's
own WSDLs (client, SimpleAuth, reporting), runs a Windows Update Agent's
sequence against `gapsync serve`.

Usage: python3 zeep_wusp.py BASE_URL CLIENT_WSDL SIMPLEAUTH_WSDL REPORTING_WSDL EXPECT_JSON

BASE_URL is http://127.0.0.1:PORT; the WSDLs' service addresses are
overridden with it. EXPECT_JSON names the approved update. Runs the
sequence over SOAP 1.1 and SOAP 1.2, prints one JSON summary line (a list,
one entry per binding) and exits 0 when every step answered with real
content; exits 1 (with the reason) otherwise, and 3 when zeep is missing.
"""

import base64
import datetime
import json
import sys
import uuid

try:
    from zeep import Client, Settings
except ImportError:
    print("python module zeep is missing: pip install zeep", file=sys.stderr)
    sys.exit(3)

CWS = "{http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService}"
SA = "{http://www.microsoft.com/SoftwareDistribution/Server/SimpleAuthWebService}"
REP = "{http://www.microsoft.com/SoftwareDistribution}"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run(base, client_wsdl, auth_wsdl, rep_wsdl, expect, binding):
    settings = Settings(strict=True)
    cc, ac, rc = (Client(w, settings=settings) for w in (client_wsdl, auth_wsdl, rep_wsdl))
    s12 = binding == "12"
    client = cc.create_service(CWS + ("ClientSoap12" if s12 else "ClientSoap"), base + "/ClientWebService/client.asmx")
    auth = ac.create_service(SA + ("SimpleAuthSoap12" if s12 else "SimpleAuthSoap"), base + "/SimpleAuthWebService/SimpleAuth.asmx")
    rep = rc.create_service(REP + ("WebServiceSoap12" if s12 else "WebServiceSoap"), base + "/ReportingWebService/WebService.asmx")
    out = {"binding": "soap" + binding}

    cfg = client.GetConfig(protocolVersion="2.90")
    props = {p.Name: p.Value for p in cfg.Properties.ConfigurationProperty}
    check(props.get("ProtocolVersion") == "3.2", "GetConfig: ProtocolVersion 3.2")
    check(props.get("MaxExtendedUpdatesPerRequest") == "50", "GetConfig: MaxExtendedUpdatesPerRequest")
    check(cfg.IsRegistrationRequired is True, "GetConfig: IsRegistrationRequired")
    plugin = cfg.AuthInfo.AuthPlugInInfo[0]
    check(plugin.PlugInID == "SimpleTargeting", "GetConfig: SimpleTargeting")

    client_id = str(uuid.uuid4())
    a = auth.GetAuthorizationCookie(clientId=client_id, dnsName="zeep-" + binding + ".lab.invalid")
    check(a.PlugInId == "SimpleTargeting" and len(a.CookieData) > 16, "GetAuthorizationCookie")
    now = datetime.datetime.now(datetime.timezone.utc)
    cookie = client.GetCookie(
        authCookies={"AuthorizationCookie": [{"PlugInId": a.PlugInId, "CookieData": a.CookieData}]},
        oldCookie={"Expiration": now},
        lastChange=cfg.LastChange,
        currentTime=now,
        protocolVersion="2.90",
    )
    check(cookie.Expiration > now + datetime.timedelta(minutes=59), "GetCookie: 60 minutes")
    check(len(cookie.EncryptedData) > 16, "GetCookie: EncryptedData")

    client.RegisterComputer(cookie=cookie, computerInfo={
        "DnsName": "zeep-" + binding + ".lab.invalid", "OSMajorVersion": 10, "OSMinorVersion": 0,
        "OSBuildNumber": 26200, "OSServicePackMajorNumber": 0, "OSServicePackMinorNumber": 0,
        "OSLocale": "en-US", "ComputerManufacturer": "QEMU", "ComputerModel": "Standard PC",
        "BiosReleaseDate": now, "ProcessorArchitecture": "AMD64", "SuiteMask": 256, "OldProductType": 1,
        "NewProductType": 48, "SystemMetrics": 0, "ClientVersionMajorNumber": 1507,
        "ClientVersionMinorNumber": 2601, "ClientVersionBuildNumber": 30012, "ClientVersionQfeNumber": 0,
        "OSDescription": "Windows 11 Pro"})

    # SyncUpdates until nothing new: every non-leaf update is taken as
    # installed (it gates the next level), every leaf as merely cached.
    installed, other, actions, rounds = [], [], {}, 0
    while True:
        rounds += 1
        check(rounds < 50, "SyncUpdates: converges")
        r = client.SyncUpdates(cookie=cookie, parameters={
            "ExpressQuery": False, "InstalledNonLeafUpdateIDs": {"int": installed} if installed else None,
            "OtherCachedUpdateIDs": {"int": other} if other else None, "SkipSoftwareSync": False,
            "NeedTwoGroupOutOfScopeUpdates": True})
        check(r.NewCookie.Expiration == cookie.Expiration, "SyncUpdates: NewCookie keeps the expiry")
        cookie = r.NewCookie
        new = r.NewUpdates.UpdateInfo if r.NewUpdates else []
        new_non_leaf = False
        for u in new:
            check(u.Deployment is not None and u.Xml, "SyncUpdates: Deployment and Xml")
            uid = u.Xml.split('UpdateID="')[1][:36].lower()
            actions[uid] = (u.ID, u.Deployment.Action, u.Deployment.Deadline)
            if u.IsLeaf:
                other.append(u.ID)
            else:
                installed.append(u.ID)
                new_non_leaf = True
        if not r.Truncated and not new_non_leaf:
            break
    check(actions.get(expect["approved"], (0, ""))[1] == "Install", "SyncUpdates: the approved update is Install")
    check(actions[expect["approved"]][2] is not None, "SyncUpdates: the deadline")
    out["rounds"] = rounds
    out["updates"] = len(actions)

    driver = client.SyncUpdates(cookie=cookie, parameters={
        "ExpressQuery": False, "SkipSoftwareSync": True, "SystemSpec": {"Device": []}})
    check(driver.NewUpdates is None and driver.DriverSyncNotNeeded == "true", "SyncUpdates: driver pass")

    ids = sorted(v[0] for v in actions.values())[:50]
    ext = client.GetExtendedUpdateInfo(cookie=cookie, revisionIDs={"int": ids},
                                       infoTypes={"XmlUpdateFragmentType": ["Extended", "LocalizedProperties"]},
                                       locales={"string": ["en-US", "en"]})
    frags = ext.Updates.Update
    check(any(f.Xml.startswith("<ExtendedProperties") for f in frags), "GetExtendedUpdateInfo: Extended")
    check(any(f.Xml.startswith("<LocalizedProperties") for f in frags), "GetExtendedUpdateInfo: LocalizedProperties")
    locations = ext.FileLocations.FileLocation if ext.FileLocations else []
    check(locations, "GetExtendedUpdateInfo: FileLocations")
    out["fragments"] = len(frags)

    fl = client.GetFileLocations(cookie=cookie, fileDigests={"base64Binary": [l.FileDigest for l in locations]})
    got = fl.FileLocations.FileLocation
    check(sorted(l.Url for l in got) == sorted(l.Url for l in locations), "GetFileLocations: same URLs")
    out["files"] = len(got)

    t = datetime.datetime.now(datetime.timezone.utc)
    def event(eid, update, misc):
        return {"BasicData": {"TargetID": {"Sid": client_id}, "SequenceNumber": 0, "TimeAtTarget": t,
                              "EventInstanceID": str(uuid.uuid4()), "NamespaceID": 1, "EventID": eid, "SourceID": 101,
                              "UpdateID": {"UpdateID": update, "RevisionNumber": 0}, "Win32HResult": 0},
                "ExtendedData": {"MiscData": {"string": misc}, "ProcessorArchitecture": "Amd64Compatible",
                                 "OSVersion": {"Major": 10, "Minor": 0, "Build": 26200, "Revision": 0,
                                               "ServicePackMajor": 0, "ServicePackMinor": 0},
                                 "OSLocaleID": 1033}}
    zero = "00000000-0000-0000-0000-000000000000"
    ok = rep.ReportEventBatch(cookie={"Expiration": cookie.Expiration, "EncryptedData": cookie.EncryptedData},
                              clientTime=t, eventBatch={"ReportingEvent": [
                                  event(147, zero, ["B=3"]),
                                  event(156, zero, ["U=" + expect["approved"].upper()]),
                                  event(183, expect["approved"], ["Q=2"])]})
    check(ok is True, "ReportEventBatch: true")
    out["client_id"] = client_id
    return out


def main():
    base, cw, aw, rw, expect = sys.argv[1:6]
    expect = json.loads(expect)
    results = []
    for binding in ("11", "12"):
        try:
            results.append(run(base, cw, aw, rw, expect, binding))
        except Exception as e:  # noqa: BLE001 - report any failure with its step
            print(f"soap{binding}: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
