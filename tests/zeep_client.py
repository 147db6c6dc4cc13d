"""An independent MS-WSUSSS client: python zeep, loaded with the protocol's
own WSDLs, runs a downstream server's sequence against `gapsync serve`.

Usage: python3 zeep_client.py BASE_URL SERVERSYNC_WSDL DSSAUTH_WSDL EXPECT_JSON

BASE_URL is http://127.0.0.1:PORT; the WSDLs' service addresses are
overridden with it. EXPECT_JSON names what the store holds (an approved
update id, a group name). Prints one JSON summary line and exits 0 when
every step answered with real content; exits 1 (with the reason) otherwise,
and 3 when zeep is not installed.
"""

import json
import sys
import uuid

try:
    import zeep
    from zeep import Client, Settings
except ImportError:
    print("python module zeep is missing: pip install zeep", file=sys.stderr)
    sys.exit(3)

SSS = "{http://www.microsoft.com/SoftwareDistribution}"
AUTH = "{http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService}"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run(base, sss_wsdl, auth_wsdl, expect, binding):
    settings = Settings(strict=True, raw_response=False)
    sss = Client(sss_wsdl, settings=settings)
    auth = Client(auth_wsdl, settings=settings)
    soap12 = binding == "12"
    sync = sss.create_service(
        SSS + ("ServerSyncProxySoap12" if soap12 else "ServerSyncProxySoap"),
        base + "/ServerSyncWebService/ServerSyncWebService.asmx",
    )
    dss_auth = auth.create_service(
        AUTH + ("DssAuthWebServiceSoap12" if soap12 else "DssAuthWebServiceSoap"),
        base + "/DssAuthWebService/DssAuthWebService.asmx",
    )
    out = {"binding": "soap" + binding}

    cfg = sync.GetAuthConfig()
    plugins = cfg.AuthInfo.AuthPlugInInfo
    check(len(plugins) == 1, "GetAuthConfig: exactly one plug-in")
    check(plugins[0].PlugInID == "DssTargeting", "GetAuthConfig: DssTargeting")
    check(plugins[0].ServiceUrl == "DssAuthWebService/DssAuthWebService.asmx", "GetAuthConfig: ServiceUrl")

    dss_id = str(uuid.uuid4())
    ac = dss_auth.GetAuthorizationCookie(accountName="zeep.test.invalid", accountGuid=dss_id)
    check(ac.PlugInId == "DssTargeting", "GetAuthorizationCookie: PlugInId")
    check(isinstance(ac.CookieData, bytes) and len(ac.CookieData) > 16, "GetAuthorizationCookie: CookieData")

    auth_type = sss.get_type("ns0:AuthorizationCookie")
    cookie = sync.GetCookie(
        authCookies={"AuthorizationCookie": [auth_type(PlugInId=ac.PlugInId, CookieData=ac.CookieData)]},
        protocolVersion="1.20",
    )
    check(cookie.Expiration is not None, "GetCookie: Expiration")
    check(len(cookie.EncryptedData) > 16, "GetCookie: EncryptedData")

    conf = sync.GetConfigData(cookie=cookie)
    check(conf.MaxNumberOfUpdatesPerRequest > 0, "GetConfigData: MaxNumberOfUpdatesPerRequest")
    check(conf.CatalogOnlySync is False, "GetConfigData: CatalogOnlySync")
    langs = conf.LanguageUpdateList.ServerSyncLanguageData
    check(any(l.ShortLanguage == "en" for l in langs), "GetConfigData: English in LanguageUpdateList")
    again = sync.GetConfigData(cookie=cookie, configAnchor=conf.NewConfigAnchor)
    check(
        again.LanguageUpdateList is None or not again.LanguageUpdateList.ServerSyncLanguageData,
        "GetConfigData with the config anchor: no language changes",
    )
    out["max_updates"] = conf.MaxNumberOfUpdatesPerRequest

    cats = sync.GetRevisionIdList(cookie=cookie, filter={"GetConfig": True, "Get63LanguageOnly": False})
    check(cats.Anchor, "GetRevisionIdList(config): Anchor")
    cat_ids = cats.NewRevisions.UpdateIdentity
    check(len(cat_ids) > 0, "GetRevisionIdList(config): categories")
    revs = sync.GetRevisionIdList(cookie=cookie, filter={"GetConfig": False, "Get63LanguageOnly": False})
    upd_ids = revs.NewRevisions.UpdateIdentity
    check(len(upd_ids) > 0, "GetRevisionIdList: updates")
    check(
        any(str(u.UpdateID) == expect["approved"] for u in upd_ids),
        "GetRevisionIdList: the approved update is listed",
    )
    out["categories"] = len(cat_ids)
    out["revisions"] = len(upd_ids)

    batch = [u for u in upd_ids][: conf.MaxNumberOfUpdatesPerRequest]
    ident = sss.get_type("ns0:UpdateIdentity")
    data = sync.GetUpdateData(
        cookie=cookie,
        updateIds={"UpdateIdentity": [ident(UpdateID=u.UpdateID, RevisionNumber=u.RevisionNumber) for u in batch]},
    )
    updates = data.updates.ServerSyncUpdateData
    check(len(updates) == len(batch), "GetUpdateData: one answer per revision")
    plain = compressed = 0
    for want, got in zip(batch, updates):
        check(
            str(got.Id.UpdateID) == str(want.UpdateID) and got.Id.RevisionNumber == want.RevisionNumber,
            "GetUpdateData: answers in request order",
        )
        if got.XmlUpdateBlob is not None:
            check(str(want.UpdateID) in got.XmlUpdateBlob.lower(), "GetUpdateData: XmlUpdateBlob names the update")
            plain += 1
        else:
            blob = got.XmlUpdateBlobCompressed
            check(blob is not None and blob[:4] == b"MSCF", "GetUpdateData: a cabinet in XmlUpdateBlobCompressed")
            compressed += 1
    urls = data.fileUrls.ServerSyncUrlData if data.fileUrls is not None else []
    for u in urls:
        check(u.MUUrl.startswith(base + "/Content/"), "GetUpdateData: MUUrl on this server")
    out["blobs"] = plain
    out["compressed_blobs"] = compressed
    out["file_urls"] = len(urls)

    deps = sync.GetDeployments(cookie=cookie, syncAnchor=revs.Anchor)
    check(deps.Anchor, "GetDeployments: Anchor")
    groups = deps.Groups.ServerSyncTargetGroup
    check(any(g.Name == expect["group"] for g in groups), "GetDeployments: the test group")
    check(any(g.Name == "All Computers" and g.IsBuiltin for g in groups), "GetDeployments: All Computers")
    dlist = deps.Deployments.ServerSyncDeployment
    check(
        any(str(d.UpdateId) == expect["approved"] for d in dlist),
        "GetDeployments: the approved update's deployment",
    )
    hidden = deps.HiddenUpdates.guid if deps.HiddenUpdates is not None else []
    check(expect["declined"] in [str(h) for h in hidden], "GetDeployments: the declined update is hidden")
    out["groups"] = len(groups)
    out["deployments"] = len(dlist)
    out["hidden"] = len(hidden)
    return out


def main():
    base, sss_wsdl, auth_wsdl, expect = sys.argv[1:5]
    expect = json.loads(expect)
    results = []
    for binding in ("11", "12"):
        try:
            results.append(run(base, sss_wsdl, auth_wsdl, expect, binding))
        except zeep.exceptions.Fault as f:
            print(f"SOAP {binding}: fault {f.message} {f.detail}", file=sys.stderr)
            sys.exit(1)
        except Exception as e:  # noqa: BLE001 - report every failure
            print(f"SOAP {binding}: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
