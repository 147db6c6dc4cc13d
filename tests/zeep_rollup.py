"""An independent MS-WSUSSS reporting client: python zeep, loaded with the
protocol's own WSDLs (DSS authorization and reporting web service), rolls a
downstream server, one computer and its status up to `gapsync serve` as a
Windows WSUS downstream server does (3.2.4.5).

Usage: python3 zeep_rollup.py BASE_URL DSSAUTH_WSDL REPORTING_WSDL UPDATE_ID BINDING

BASE_URL is http://127.0.0.1:PORT (the WSDLs' addresses are overridden with
it); UPDATE_ID is an update the server holds; BINDING is 11 or 12. Prints one
JSON line (the server id, site name and computer id it rolled up) and exits
0 when every step was answered as the spec says; exits 1 (with the reason)
otherwise, and 3 when zeep is not installed.
"""

import datetime
import json
import sys
import uuid

try:
    from zeep import Client, Settings
except ImportError:
    print("python module zeep is missing: pip install zeep", file=sys.stderr)
    sys.exit(3)

SSS = "{http://www.microsoft.com/SoftwareDistribution}"
AUTH = "{http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService}"
NEVER = datetime.datetime(1753, 1, 1)
NIL = "00000000-0000-0000-0000-000000000000"
SUMMARY = [
    "UpdateCount", "DeclinedUpdateCount", "ApprovedUpdateCount", "NotApprovedUpdateCount",
    "UpdatesWithStaleUpdateApprovalsCount", "ExpiredUpdateCount",
    "CriticalOrSecurityUpdatesNotApprovedForInstallCount",
    "WsusInfrastructureUpdatesNotApprovedForInstallCount", "UpdatesWithClientErrorsCount",
    "UpdatesWithServerErrorsCount", "UpdatesNeedingFilesCount", "UpdatesNeededByComputersCount",
    "UpdatesUpToDateCount", "CustomComputerTargetGroupCount", "ComputerTargetCount",
    "ComputerTargetsNeedingUpdatesCount", "ComputerTargetsWithUpdateErrorsCount",
    "ComputersUpToDateCount",
]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run(base, auth_wsdl, reporting_wsdl, update_id, binding):
    settings = Settings(strict=True)
    auth = Client(auth_wsdl, settings=settings)
    rep = Client(reporting_wsdl, settings=settings)
    soap12 = binding == "12"
    dss_auth = auth.create_service(
        AUTH + ("DssAuthWebServiceSoap12" if soap12 else "DssAuthWebServiceSoap"),
        base + "/DssAuthWebService/DssAuthWebService.asmx",
    )
    reporting = rep.create_service(
        SSS + ("WebServiceSoap12" if soap12 else "WebServiceSoap"),
        base + "/ReportingWebService/ReportingWebService.asmx",
    )
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    # The reserved cookie of 3.2.4.5.
    cookie = {"Expiration": datetime.datetime(9999, 12, 31, 23, 59, 59), "EncryptedData": b""}

    # A Windows DSS authorizes first: the USS learns its id (the DSS table).
    dss_id = str(uuid.uuid4())
    site = "zeep-site-" + binding
    ac = dss_auth.GetAuthorizationCookie(accountName=site, accountGuid=dss_id)
    check(ac.PlugInId == "DssTargeting", "GetAuthorizationCookie: PlugInId")

    cfg = reporting.GetRollupConfiguration(cookie=cookie)
    check(cfg.DoDetailedRollup is True, "GetRollupConfiguration: DoDetailedRollup")
    for f in ["RollupDownstreamServersMaxBatchSize", "RollupComputersMaxBatchSize",
              "GetOutOfSyncComputersMaxBatchSize", "RollupComputerStatusMaxBatchSize"]:
        check(getattr(cfg, f) > 0, "GetRollupConfiguration: " + f)
    uss_id = str(cfg.ServerId)

    summary = {name: 0 for name in SUMMARY}
    summary["ComputerTargetCount"] = 1
    reporting.RollupDownstreamServers(
        cookie=cookie,
        clientTime=now,
        downstreamServers={"DownstreamServerRollupInfo": [{
            "ServerId": dss_id, "FullDomainName": site, "LastSyncTime": now,
            "ParentServerId": NIL, "Version": "10.0.26100.1", "IsReplica": True,
            "LastRollupTime": NEVER, "ServerSummary": summary,
            "ClientSummaries": {"DownstreamServerRollupClientSummary": []},
        }]},
    )

    computer = str(uuid.uuid4())
    base_info = {
        "ComputerId": computer, "LastSyncTime": now, "LastSyncResult": 1,
        "LastReportedRebootTime": NEVER, "LastReportedStatusTime": now,
        "LastInventoryTime": NEVER, "ParentServerId": dss_id,
    }
    # Without details first: a new computer is answered NewParent.
    r = reporting.RollupComputers(cookie=cookie, clientTime=now,
                                  computers={"ComputerRollupInfo": [dict(base_info)]})
    changed = [(c.ComputerId, c.Change) for c in (r or [])]
    check(changed == [(computer, "NewParent")], "RollupComputers: NewParent for a new computer, got %r" % changed)
    details = {
        "TargetGroupIdList": {"guid": []}, "RequestedTargetGroupNames": {"string": []},
        "IPAddress": "192.0.2.7", "FullDomainName": "pc-7.zeep.example",
        "OSMajorVersion": 10, "OSMinorVersion": 0, "OSBuildNumber": 26100,
        "OSServicePackMajorNumber": 0, "OSServicePackMinorNumber": 0, "OSLocale": "en-US",
        "OSFamily": "Windows", "OSDescription": "Windows 11 Enterprise",
        "ComputerMake": "Contoso", "ComputerModel": "Z1", "BiosVersion": "1.0", "BiosName": "BIOS",
        "BiosReleaseDate": NEVER, "ProcessorArchitecture": "AMD64", "SuiteMask": 256,
        "OldProductType": 1, "NewProductType": 4, "SystemMetrics": 0, "ClientVersion": "10.0.26100.1",
    }
    r = reporting.RollupComputers(cookie=cookie, clientTime=now,
                                  computers={"ComputerRollupInfo": [dict(base_info, Details=details)]})
    check(not r, "RollupComputers with details: nothing asked, got %r" % r)

    stale = reporting.GetOutOfSyncComputers(
        cookie=cookie, parentServerId=dss_id,
        lastRollupNumbers={"ComputerLastRollupNumber": [{"ComputerId": computer, "RollupNumber": 0}]})
    check(list(stale or []) == [computer], "GetOutOfSyncComputers before any status: the computer")

    ok = reporting.RollupComputerStatus(
        cookie=cookie, clientTime=now, parentServerId=dss_id,
        computers={"ComputerStatusRollupInfo": [{
            "InstanceId": str(uuid.uuid4()), "ComputerId": computer,
            "EffectiveLastDetectionTime": now, "RollupNumber": 1, "IsFullRollup": True,
            "UpdateStatus": {"ComputerStatusRollupUpdateStatus": [
                {"UpdateId": update_id, "SummarizationState": 4, "LastChangeTime": now},
            ]},
        }]})
    check(ok is True, "RollupComputerStatus: true")
    stale = reporting.GetOutOfSyncComputers(
        cookie=cookie, parentServerId=dss_id,
        lastRollupNumbers={"ComputerLastRollupNumber": [{"ComputerId": computer, "RollupNumber": 1}]})
    check(not stale, "GetOutOfSyncComputers after the status: nothing, got %r" % stale)
    return {"uss": uss_id, "server_id": dss_id, "site": site, "computer": computer}


def main():
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    base, auth_wsdl, reporting_wsdl, update_id, binding = sys.argv[1:]
    try:
        out = run(base, auth_wsdl, reporting_wsdl, update_id, binding)
    except Exception as e:  # noqa: BLE001 - report any failure with its reason
        print("zeep rollup failed: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
