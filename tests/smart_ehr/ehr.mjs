// A test EHR for the SMART app tests (tests/smart_testbed.py starts it): a real OAuth 2 / OpenID Connect
// authorization server (oidc-provider) in a small Express front that plays the EHR.
//
//   GET  /fhir/.well-known/smart-configuration   SMART discovery (launch-ehr, PKCE S256, public client)
//   ALL  /fhir/*                                  proxied to SEKMET, which checks the access tokens
//   GET  /other-fhir/.well-known/smart-configuration   the same AS for a FHIR base it issues no token for
//   POST /ehr/launch {patient, appContext, ...}   a launch id for the app (single use, 5 minutes)
//   GET  /ehr/open?app=URL&patient=ID&...         an EHR page showing the app in an iframe, launched
//   POST /ehr/fhir-down {down: true|false}        the FHIR proxy drops every connection (server down)
//   the rest                                      oidc-provider: /auth, /token, /jwks, /me ...
//
// Launch options (JSON of POST /ehr/launch, or query parameters of /ehr/open): appContext (passed to the
// token response), needPatientBanner (default true), deny (scopes the "clinician" does not grant), refuse
// (the clinician refuses: access_denied), expiredToken (the access token is issued already expired).
//
// Access tokens are HS256 JWTs for the FHIR base signed with JWT_SECRET, the secret SEKMET checks tokens
// with (the harness writes it into SEKMET's database before starting it), with the launch's patient as a
// claim. The token response carries patient, need_patient_banner and appContext, and scope names
// "launch openid fhirUser" too. A fixed clinician signs in and consents at once.
import crypto from 'node:crypto';
import http from 'node:http';

import express from 'express';
import Provider, { errors } from 'oidc-provider';

const PORT = Number(process.env.PORT);
const ORIGIN = `http://127.0.0.1:${PORT}`;
const FHIR = `${ORIGIN}/fhir`;
const OTHER_FHIR = `${ORIGIN}/other-fhir`;
const UPSTREAM = new URL(process.env.SEKMET_URL);
const SECRET = Buffer.from(process.env.JWT_SECRET, 'utf8');
const CLIENT_ID = process.env.CLIENT_ID;
const REDIRECT_URIS = process.env.REDIRECT_URIS.split(',');
const TOKEN_TTL = Number(process.env.TOKEN_TTL || 300);
const RESOURCE_SCOPES = [
  'patient/Patient.rs', 'patient/Observation.rs', 'patient/MedicationRequest.rs',
  'patient/MedicationStatement.rs', 'patient/MedicationAdministration.rs', 'patient/Condition.rs',
];
const CLINICIAN = 'dr-rheum';

const launches = new Map(); // launch id -> options + {created, used}
const grants = new Map(); // grant id -> launch options (one grant per authorization: see loadExistingGrant)
let fhirDown = false;

const provider = new Provider(ORIGIN, {
  clients: [{
    client_id: CLIENT_ID, token_endpoint_auth_method: 'none', redirect_uris: REDIRECT_URIS,
    grant_types: ['authorization_code'], response_types: ['code'],
  }],
  pkce: { required: () => true },
  scopes: ['openid', 'fhirUser', 'launch', ...RESOURCE_SCOPES],
  claims: { openid: ['sub'], fhirUser: ['fhirUser'] },
  findAccount: async (ctx, id) => ({
    accountId: id, claims: async () => ({ sub: id, fhirUser: `${FHIR}/Practitioner/${id}` }),
  }),
  // Checked in this order, after the redirect URI and PKCE: a wrong aud never spends the launch.
  extraParams: {
    aud(ctx, value) {
      if (value !== FHIR) throw new errors.InvalidRequest(`aud must be ${FHIR}`);
    },
    launch(ctx, value) {
      const found = value && launches.get(value);
      if (!found) throw new errors.InvalidRequest('unknown launch');
      if (found.used) throw new errors.InvalidRequest('launch already used');
      if (Date.now() - found.created > 300_000) throw new errors.InvalidRequest('launch expired');
      found.used = true;
    },
  },
  // Every authorization gets its own grant (made at its consent), so a grant names exactly one launch and
  // its patient: a grant from an earlier launch in the same browser session is never reused.
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId;
    return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => FHIR,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        if (resource !== FHIR) throw new errors.InvalidTarget();
        return {
          scope: RESOURCE_SCOPES.join(' '), audience: FHIR, accessTokenFormat: 'jwt', accessTokenTTL: TOKEN_TTL,
          jwt: { sign: { alg: 'HS256', key: SECRET } },
        };
      },
    },
  },
  extraTokenClaims: async (ctx, token) => {
    const launch = grants.get(token.grantId);
    return launch ? { patient: launch.patient } : undefined;
  },
  formats: {
    customizers: {
      jwt: async (ctx, token, jwt) => {
        if (grants.get(token.grantId)?.expiredToken) jwt.payload.exp = jwt.payload.iat - 60;
      },
    },
  },
  ttl: { AccessToken: TOKEN_TTL, AuthorizationCode: 60, Interaction: 600, Session: 3600, Grant: 3600, IdToken: 300 },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
});

// The SMART token response: the launch context next to the token, "launch openid fhirUser" in scope.
provider.use(async (ctx, next) => {
  await next();
  const grant = ctx.oidc?.entities?.Grant;
  if (ctx.path !== '/token' || ctx.status !== 200 || !grant || !ctx.body) return;
  const launch = grants.get(grant.jti);
  if (!launch) return;
  const scope = new Set(['launch', ...String(ctx.body.scope || '').split(' ').filter(Boolean), 'openid', 'fhirUser']);
  ctx.body = {
    ...ctx.body, scope: [...scope].join(' '), patient: launch.patient,
    need_patient_banner: launch.needPatientBanner !== false,
    ...(launch.appContext ? { appContext: launch.appContext } : {}),
  };
});

for (const event of ['authorization.error', 'grant.error', 'server_error']) { // why a request failed, in the log
  provider.on(event, (ctx, err) => console.error(event, err?.error || '', err?.error_description || '', err?.message || ''));
}

function smartConfiguration() {
  return {
    issuer: ORIGIN, jwks_uri: `${ORIGIN}/jwks`, authorization_endpoint: `${ORIGIN}/auth`,
    token_endpoint: `${ORIGIN}/token`, grant_types_supported: ['authorization_code'],
    token_endpoint_auth_methods_supported: ['none'], response_types_supported: ['code'],
    scopes_supported: ['openid', 'fhirUser', 'launch', ...RESOURCE_SCOPES],
    code_challenge_methods_supported: ['S256'],
    capabilities: ['launch-ehr', 'client-public', 'context-ehr-patient', 'permission-v2', 'permission-patient',
      'sso-openid-connect'],
  };
}

function newLaunch(options) {
  const id = crypto.randomBytes(16).toString('hex');
  const bool = (v) => v === true || v === 'true' || v === '1';
  launches.set(id, {
    patient: String(options.patient), appContext: options.appContext || undefined,
    needPatientBanner: !(options.needPatientBanner === false || options.needPatientBanner === 'false'),
    deny: [].concat(options.deny || []).flatMap((s) => String(s).split(' ')).filter(Boolean),
    refuse: bool(options.refuse), expiredToken: bool(options.expiredToken), created: Date.now(), used: false,
  });
  return id;
}

const app = express();
app.disable('x-powered-by');

app.get(['/fhir/.well-known/smart-configuration', '/other-fhir/.well-known/smart-configuration'],
  (req, res) => res.json(smartConfiguration()));

app.use('/fhir', (req, res) => {
  if (fhirDown) { req.socket.destroy(); return; }
  const target = new URL(req.originalUrl, UPSTREAM);
  const headers = { ...req.headers, host: target.host };
  const upstream = http.request(target, { method: req.method, headers }, (answer) => {
    res.writeHead(answer.statusCode, answer.headers);
    answer.pipe(res);
  });
  upstream.on('error', () => {
    res.writeHead(502, { 'content-type': 'application/fhir+json' });
    res.end(JSON.stringify({ resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'transient', diagnostics: 'FHIR server unreachable' }] }));
  });
  req.pipe(upstream);
});

app.post('/ehr/launch', express.json(), (req, res) => {
  if (!req.body?.patient) return res.status(400).json({ error: 'patient is required' });
  return res.json({ launch: newLaunch(req.body), iss: FHIR, other_iss: OTHER_FHIR });
});

app.post('/ehr/fhir-down', express.json(), (req, res) => {
  fhirDown = Boolean(req.body?.down);
  res.json({ down: fhirDown });
});

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

app.get('/ehr/open', (req, res) => {
  const { app: appUrl, iss, ...options } = req.query;
  if (!appUrl || !options.patient) return res.status(400).send('app and patient are required');
  const src = `${appUrl}?${new URLSearchParams({ iss: iss || FHIR, launch: newLaunch(options) })}`;
  res.type('html').send(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Test EHR</title></head>
<body style="margin:0;font-family:sans-serif"><div style="padding:6px 12px;background:#ddd">Test EHR: patient
${escapeHtml(options.patient)}</div><iframe id="app" title="SMART app" src="${escapeHtml(src)}"
style="border:0;width:100%;height:calc(100vh - 34px)"></iframe></body></html>`);
});

app.get('/interaction/:uid', async (req, res, next) => {
  try {
    const details = await provider.interactionDetails(req, res);
    const launch = launches.get(details.params.launch);
    if (details.prompt.name === 'login') {
      await provider.interactionFinished(req, res, { login: { accountId: CLINICIAN } }, { mergeWithLastSubmission: false });
      return;
    }
    if (launch?.refuse) {
      await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'the clinician did not allow the app' },
        { mergeWithLastSubmission: false });
      return;
    }
    const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = details.prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes || {})) {
      const denied = scopes.filter((s) => launch?.deny.includes(s));
      const allowed = scopes.filter((s) => !denied.includes(s));
      if (allowed.length) grant.addResourceScope(indicator, allowed.join(' '));
      if (denied.length) grant.rejectResourceScope(indicator, denied.join(' '));
    }
    const grantId = await grant.save();
    if (launch) grants.set(grantId, launch);
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  } catch (err) {
    next(err);
  }
});

app.use(provider.callback());

http.createServer(app).listen(PORT, '127.0.0.1', () => console.log(`test EHR on ${ORIGIN}`));
