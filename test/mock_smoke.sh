#!/usr/bin/env bash
#
# mock_smoke.sh
#     Smoke test of test/mock_unipile: starts it on a free port together
#     with a tiny webhook receiver (webhook_receiver.py), exercises every
#     /api/v1 route and /_mock control endpoint, real webhook deliveries
#     (including retries), faults and auth failures, then stops it with
#     SIGTERM and expects exit status 0.  Exits non-zero on any mismatch.
#
# Usage: test/mock_smoke.sh            (builds the mock if needed)
#        MOCK_WRAPPER="valgrind --leak-check=full --error-exitcode=99" \
#            test/mock_smoke.sh        (run the mock under a wrapper)
#
# Needs bash, curl and python3.
#
# test/mock_smoke.sh

set -u

HERE=$(cd "$(dirname "$0")" && pwd)
MOCK="$HERE/mock_unipile"
KEY="smoke-key"
TMP=$(mktemp -d)
FAILS=0
PASSES=0
MOCK_PID=""
RECV_PID=""

cleanup() {
    [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null
    [ -n "$RECV_PID" ] && kill "$RECV_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

[ -x "$MOCK" ] || make -C "$HERE" >/dev/null || exit 1
# resolve the interpreter once (version-manager shims are slow to start)
PY=$(python3 -c 'import sys; print(sys.executable)') || exit 1

pass() { PASSES=$((PASSES + 1)); }
fail() { FAILS=$((FAILS + 1)); echo "FAIL: $*" >&2; }

# wait_line FILE REGEX: wait (up to 30 s) for a line matching REGEX
wait_line() {
    for _ in $(seq 1 300); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# ---- start the receiver and the mock --------------------------------------
"$PY" "$HERE/webhook_receiver.py" 0 "$TMP/hooks.jsonl" >"$TMP/recv.out" 2>&1 &
RECV_PID=$!
wait_line "$TMP/recv.out" 'receiver listening on [0-9]+' || { echo "receiver did not start" >&2; exit 1; }
RPORT=$(sed -n 's/^receiver listening on \([0-9]*\)$/\1/p' "$TMP/recv.out")
HOOK="http://127.0.0.1:$RPORT"

${MOCK_WRAPPER:-} "$MOCK" --port 0 --api-key "$KEY" >"$TMP/mock.out" 2>"$TMP/mock.err" &
MOCK_PID=$!
wait_line "$TMP/mock.out" '^mock_unipile listening on 127\.0\.0\.1:[0-9]+$' ||
    { echo "mock did not start"; cat "$TMP/mock.err"; exit 1; } >&2
[ "$(wc -l <"$TMP/mock.out")" -eq 1 ] && pass || fail "start line is not exactly one line"
PORT=$(sed -n 's/^mock_unipile listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$TMP/mock.out")
BASE="http://127.0.0.1:$PORT"

# ---- helpers ----------------------------------------------------------------
# call METHOD PATH [curl args...]: sets STATUS and BODY (with the API key)
call() {
    local m=$1 p=$2
    shift 2
    STATUS=$(curl -sS -o "$TMP/body" -w '%{http_code}' -X "$m" "$BASE$p" -H "X-API-KEY: $KEY" "$@")
    CURL_RC=$?
    BODY=$(cat "$TMP/body" 2>/dev/null)
}
# ctl METHOD PATH [JSON]: control call without the key
ctl() {
    if [ $# -ge 3 ]; then
        STATUS=$(curl -sS -o "$TMP/body" -w '%{http_code}' -X "$1" "$BASE$2" -H 'Content-Type: application/json' -d "$3")
    else
        STATUS=$(curl -sS -o "$TMP/body" -w '%{http_code}' -X "$1" "$BASE$2")
    fi
    BODY=$(cat "$TMP/body" 2>/dev/null)
}
# json METHOD PATH JSON: API call with a JSON body
json() { call "$1" "$2" -H 'Content-Type: application/json' -d "$3"; }

expect_status() {
    if [ "$STATUS" = "$1" ]; then pass; else fail "$2: expected HTTP $1, got $STATUS; body: $BODY"; fi
}
# check DESC PYEXPR: PYEXPR is evaluated with j = parsed BODY
check() {
    printf '%s' "$BODY" >"$TMP/cur.json"
    if "$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$TMP/cur.json" 2>/dev/null; then
        pass
    else
        fail "$1: ($2) on body: ${BODY:0:600}"
    fi
}
# val PYEXPR: print a value from BODY
val() {
    printf '%s' "$BODY" >"$TMP/cur.json"
    "$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); v=($1); print(v if not isinstance(v,(dict,list,bool)) and v is not None else json.dumps(v))" "$TMP/cur.json"
}
# err_is STATUS TYPE DESC
err_is() {
    expect_status "$1" "$3"
    check "$3" "j['status']==$1 and j['type']=='$2' and isinstance(j['title'],str) and 'detail' in j"
}
# wait_deliveries: until the mock has no pending webhook delivery
wait_deliveries() {
    for _ in $(seq 1 150); do
        ctl GET /_mock/deliveries
        [ "$(val "j['pending']")" = 0 ] && return 0
        sleep 0.1
    done
    fail "deliveries still pending"
}
# hooks PYEXPR: evaluate PYEXPR with h = list of received webhook records
hooks() {
    "$PY" - "$TMP/hooks.jsonl" "$1" <<'EOF'
import json, sys
h = []
try:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        try:
            r["json"] = json.loads(r["body"])
        except Exception:
            r["json"] = None
        h.append(r)
except FileNotFoundError:
    pass
v = eval(sys.argv[2])
print(v if not isinstance(v, (dict, list, bool)) and v is not None else json.dumps(v))
EOF
}
hook_check() {
    local got
    got=$(hooks "$2")
    if [ "$got" = "true" ]; then pass; else fail "$1: ($2) -> $got; received: $(tail -c 1500 "$TMP/hooks.jsonl" 2>/dev/null)"; fi
}

T0=1767225600000 # 2026-01-01T00:00:00Z

# ---- control basics -----------------------------------------------------------
ctl GET /_mock/health
expect_status 200 "health"
ctl POST /_mock/clock "{\"now_ms\":$T0}"
expect_status 200 "set clock"
check "clock set" "abs(j['now_ms']-$T0) < 1000"
ctl GET /_mock/clock
check "clock ticks from the set value" "$T0 <= j['now_ms'] < $T0 + 60000"

# ---- auth ---------------------------------------------------------------------
STATUS=$(curl -sS -o "$TMP/body" -w '%{http_code}' "$BASE/api/v1/users/relations?account_id=A")
BODY=$(cat "$TMP/body")
expect_status 401 "missing key"
check "missing key body" "j=={'status':401,'type':'errors/invalid_api_key','title':'Unauthorized','detail':'Missing or invalid X-API-KEY header'}"
STATUS=$(curl -sS -o "$TMP/body" -w '%{http_code}' -H 'X-API-KEY: wrong' "$BASE/api/v1/webhooks")
BODY=$(cat "$TMP/body")
err_is 401 errors/invalid_api_key "wrong key"

# ---- unknown route / wrong method ----------------------------------------------
call GET /api/v1/nothing/here
err_is 404 errors/resource_not_found "unknown route"
call DELETE /api/v1/users/invite
expect_status 405 "wrong method"
check "405 body" "j['status']==405 and j['type'].startswith('errors/')"
ctl GET /_mock/nothing
expect_status 404 "unknown control route"

# ---- webhooks -------------------------------------------------------------------
json POST /api/v1/webhooks "{\"source\":\"users\",\"request_url\":\"$HOOK/users\",\"name\":\"Users hook\",\"headers\":[{\"key\":\"Unipile-Auth\",\"value\":\"s3cret\"}]}"
expect_status 201 "create users webhook"
check "WebhookCreated" "j['object']=='WebhookCreated' and len(j['webhook_id'])>0"
WH_USERS=$(val "j['webhook_id']")
json POST /api/v1/webhooks "{\"source\":\"messaging\",\"request_url\":\"$HOOK/messaging\",\"name\":\"Msg hook\",\"headers\":[{\"key\":\"Unipile-Auth\",\"value\":\"s3cret\"}],\"events\":[\"message_received\"]}"
expect_status 201 "create messaging webhook"
json POST /api/v1/webhooks "{\"source\":\"account_status\",\"request_url\":\"$HOOK/status\",\"name\":\"Status hook\"}"
expect_status 201 "create account_status webhook"
json POST /api/v1/webhooks "{\"source\":\"bogus\",\"request_url\":\"$HOOK/x\"}"
err_is 400 errors/invalid_parameters "webhook with bad source"
json POST /api/v1/webhooks '{"source":"users"}'
err_is 400 errors/missing_parameters "webhook without request_url"
json POST /api/v1/webhooks "{\"source\":\"users\",\"request_url\":\"$HOOK/tmp\"}"
WH_TMP=$(val "j['webhook_id']")
call GET /api/v1/webhooks
expect_status 200 "list webhooks"
check "WebhookList" "j['object']=='WebhookList' and len(j['items'])==4 and j['cursor'] is None and j['items'][0]['id']=='$WH_USERS'"
call DELETE "/api/v1/webhooks/$WH_TMP"
expect_status 200 "delete webhook"
check "WebhookDeleted" "j=={'object':'WebhookDeleted'}"
call DELETE "/api/v1/webhooks/$WH_TMP"
err_is 404 errors/resource_not_found "delete unknown webhook"
call GET /api/v1/webhooks
check "3 webhooks left" "len(j['items'])==3"

# ---- people ---------------------------------------------------------------------
ctl POST /_mock/people '[
 {"provider_id":"ACoAA1","public_identifier":"alice-smith","first_name":"Alice","last_name":"Smith","headline":"CTO","accept_after_s":3600,"reply_after_s":7200,"reply_text":"Thanks!","reply_after_step":1},
 {"provider_id":"ACoBOB","public_identifier":"bob-jones","first_name":"Bob","last_name":"Jones","headline":"CEO","accept_after_s":60},
 {"provider_id":"ACoCAROL","public_identifier":"carol-x","first_name":"Carol","last_name":"X","headline":"VP"},
 {"provider_id":"ACoJUR","public_identifier":"jürgen-müller","first_name":"Jürgen","last_name":"Müller","headline":"Dev"}]'
expect_status 200 "upsert people"
check "people upserted" "j['upserted']==4"
ctl POST /_mock/people '{"public_identifier":"x"}'
err_is 400 errors/missing_parameters "person without provider_id"
ctl POST /_mock/people 'not json'
err_is 400 errors/malformed_request "people not JSON"

# ---- profiles -------------------------------------------------------------------
call GET "/api/v1/users/alice-smith?account_id=A"
expect_status 200 "profile by public id"
check "UserProfile" "j['object']=='UserProfile' and j['provider']=='LINKEDIN' and j['provider_id']=='ACoAA1' and j['public_identifier']=='alice-smith' and j['first_name']=='Alice' and j['last_name']=='Smith' and j['headline']=='CTO' and j['is_relationship'] is False and j['network_distance']=='SECOND_DEGREE' and 'invitation' not in j"
call GET "/api/v1/users/ACoAA1?account_id=A"
check "profile by provider id" "j['public_identifier']=='alice-smith'"
call GET "/api/v1/users/j%C3%BCrgen-m%C3%BCller?account_id=A"
expect_status 200 "profile with url-encoded identifier"
check "decoded identifier" "j['provider_id']=='ACoJUR'"
call GET "/api/v1/users/nobody-here?account_id=A"
err_is 404 errors/resource_not_found "unknown profile"

# ---- invitations ----------------------------------------------------------------
json POST /api/v1/users/invite '{"provider_id":"ACoAA1","account_id":"A","message":"Hi Alice, let us connect"}'
expect_status 201 "invite alice"
check "UserInvitationSent" "j['object']=='UserInvitationSent' and j['invitation_id'].isdigit() and len(j['invitation_id'])>=19"
INV_ALICE=$(val "j['invitation_id']")
json POST /api/v1/users/invite '{"provider_id":"ACoAA1","account_id":"A"}'
err_is 422 errors/already_invited_recently "re-invite pending"
check "already invited title" "j['title']=='Should delay new invitation to this recipient'"
json POST /api/v1/users/invite '{"provider_id":"ACoBOB","account_id":"A"}'
expect_status 201 "invite bob without note"
INV_BOB=$(val "j['invitation_id']")
check "ids increase" "int(j['invitation_id']) > $INV_ALICE"
M300=$("$PY" -c 'print("é"*300)')
M301=$("$PY" -c 'print("é"*301)')
json POST /api/v1/users/invite "{\"provider_id\":\"ACoCAROL\",\"account_id\":\"A\",\"message\":\"$M301\"}"
err_is 400 errors/too_many_characters "301 code points"
json POST /api/v1/users/invite "{\"provider_id\":\"ACoCAROL\",\"account_id\":\"A\",\"message\":\"$M300\"}"
expect_status 201 "300 code points (600 bytes) accepted"
INV_CAROL=$(val "j['invitation_id']")
json POST /api/v1/users/invite '{"account_id":"A"}'
err_is 400 errors/missing_parameters "invite without provider_id"
json POST /api/v1/users/invite '{"provider_id": oops'
err_is 400 errors/malformed_request "invite body not JSON"
json POST /api/v1/users/invite '{"provider_id":"ACoUNKNOWN1","account_id":"A"}'
expect_status 201 "invite unknown provider id (auto-created)"
INV_UNK=$(val "j['invitation_id']")
call GET "/api/v1/users/ACoUNKNOWN1?account_id=A"
expect_status 200 "auto-created person has a profile"
call GET "/api/v1/users/alice-smith?account_id=A"
check "pending invitation on profile" "j['invitation']=={'type':'SENT','status':'PENDING'}"

call GET "/api/v1/users/invite/sent?account_id=A"
expect_status 200 "list sent invitations"
check "InvitationList" "j['object']=='InvitationList' and len(j['items'])==4 and j['cursor'] is None"
check "newest first" "j['items'][0]['id']=='$INV_UNK' and j['items'][3]['id']=='$INV_ALICE'"
check "InvitationSent item" "[i for i in j['items'] if i['id']=='$INV_ALICE'][0] | {} == {'object':'InvitationSent','id':'$INV_ALICE','invited_user':'Alice Smith','invited_user_id':'ACoAA1','invited_user_public_id':'alice-smith','invited_user_description':'CTO','date':'Sent today','parsed_datetime':[i for i in j['items'] if i['id']=='$INV_ALICE'][0]['parsed_datetime'],'invitation_text':'Hi Alice, let us connect','specifics':{'provider':'LINKEDIN'}}"
check "bob has no note" "[i for i in j['items'] if i['id']=='$INV_BOB'][0]['invitation_text'] is None"
check "parsed_datetime is ISO" "j['items'][0]['parsed_datetime'].startswith('2026-01-01T00:') and j['items'][0]['parsed_datetime'].endswith('Z')"
call GET "/api/v1/users/invite/sent?account_id=A&limit=3"
check "page 1 of sent" "len(j['items'])==3 and isinstance(j['cursor'],str)"
CUR=$(val "j['cursor']")
call GET "/api/v1/users/invite/sent?account_id=A&limit=3" -G --data-urlencode "cursor=$CUR"
check "page 2 of sent" "len(j['items'])==1 and j['cursor'] is None and j['items'][0]['id']=='$INV_ALICE'"
call GET "/api/v1/users/invite/sent?account_id=A&limit=101"
err_is 400 errors/invalid_parameters "sent limit 101"
call GET "/api/v1/users/invite/sent?account_id=A&limit=0"
err_is 400 errors/invalid_parameters "sent limit 0"

call DELETE "/api/v1/users/invite/sent/$INV_CAROL?account_id=A"
expect_status 200 "cancel invitation"
check "InvitationCanceled" "j=={'object':'InvitationCanceled'}"
call DELETE "/api/v1/users/invite/sent/$INV_CAROL?account_id=A"
err_is 404 errors/resource_not_found "cancel twice"
call DELETE "/api/v1/users/invite/sent/123?account_id=A"
err_is 404 errors/resource_not_found "cancel unknown"

ctl GET "/_mock/state?account_id=A"
expect_status 200 "state"
check "state invitations" "len(j['invitations'])==3 and j['relations_count']==0 and j['chats']==[]"
SENT_ALICE=$(val "[i for i in j['invitations'] if i['id']=='$INV_ALICE'][0]['sent_at']")
SENT_BOB=$(val "[i for i in j['invitations'] if i['id']=='$INV_BOB'][0]['sent_at']")

# ---- acceptance ---------------------------------------------------------------------
ctl POST /_mock/clock "{\"now_ms\":$((SENT_ALICE + 3600 * 1000 + 1000))}"
expect_status 200 "advance clock past alice's acceptance"
ctl GET "/_mock/state?account_id=A"
check "accepted invitations left the pending list" "[i['provider_id'] for i in j['invitations']]==['ACoUNKNOWN1'] and j['relations_count']==2"
check "note chat created" "len(j['chats'])==1 and j['chats'][0]['attendee']=='ACoAA1' and [m['text'] for m in j['chats'][0]['messages']]==['Hi Alice, let us connect'] and j['chats'][0]['messages'][0]['sender_provider_id']=='ACoOWNA' and j['chats'][0]['messages'][0]['timestamp']==$SENT_ALICE+3600000"
NOTE_CHAT=$(val "j['chats'][0]['chat_id']")
call GET "/api/v1/users/relations?account_id=A"
expect_status 200 "relations"
check "UserRelationsList" "j['object']=='UserRelationsList' and j['cursor'] is None and [i['member_id'] for i in j['items']]==['ACoAA1','ACoBOB']"
check "relation created_at = accept moment" "j['items'][0]['created_at']==$SENT_ALICE+3600000 and j['items'][1]['created_at']==$SENT_BOB+60000"
check "UserRelation item" "set(j['items'][0])=={'object','first_name','last_name','headline','public_identifier','public_profile_url','created_at','member_id','member_urn','connection_urn'} and j['items'][0]['object']=='UserRelation' and j['items'][0]['member_urn']=='urn:li:fsd_profile:ACoAA1' and j['items'][0]['connection_urn'].startswith('urn:li:fsd_connection:') and j['items'][0]['public_profile_url']=='https://www.linkedin.com/in/alice-smith/' and j['items'][0]['first_name']=='Alice'"
call GET "/api/v1/users/relations?account_id=A&limit=1001"
err_is 400 errors/invalid_parameters "relations limit 1001"
call GET "/api/v1/users/alice-smith?account_id=A"
check "profile after acceptance" "j['is_relationship'] is True and j['network_distance']=='FIRST_DEGREE' and 'invitation' not in j"
json POST /api/v1/users/invite '{"provider_id":"ACoAA1","account_id":"A"}'
err_is 422 errors/already_connected "invite a relation"

wait_deliveries
hook_check "two new_relation webhooks" "len([r for r in h if r['path']=='/users' and r['json']['event']=='new_relation'])==2"
hook_check "new_relation payload" "[r['json'] for r in h if r['path']=='/users' and r['json']['user_provider_id']=='ACoAA1'][0]=={'event':'new_relation','account_id':'A','account_type':'LINKEDIN','webhook_name':'Users hook','user_full_name':'Alice Smith','user_provider_id':'ACoAA1','user_public_identifier':'alice-smith','user_profile_url':'https://www.linkedin.com/in/alice-smith/','user_picture_url':''}"
hook_check "custom header and content type" "all(r['headers'].get('unipile-auth')=='s3cret' and r['headers'].get('content-type')=='application/json' for r in h if r['path'] in ('/users','/messaging'))"
hook_check "note -> message_received from us" "[r['json'] for r in h if r['path']=='/messaging'][0]['sender']['attendee_provider_id']=='ACoOWNA' and [r['json'] for r in h if r['path']=='/messaging'][0]['message']=='Hi Alice, let us connect'"
hook_check "message_received shape" "(lambda p: p['event']=='message_received' and p['account_id']=='A' and p['account_type']=='LINKEDIN' and p['account_info']=={'type':'LINKEDIN','feature':'classic','user_id':'ACoOWNA'} and p['chat_id']=='$NOTE_CHAT' and p['webhook_name']=='Msg hook' and p['timestamp'].endswith('Z') and len(p['message_id'])>0 and p['is_group'] is False and len(p['attendees'])==2 and set(p['sender'])=={'attendee_id','attendee_name','attendee_provider_id','attendee_profile_url'})([r['json'] for r in h if r['path']=='/messaging'][0])"
hook_check "note message precedes alice's new_relation" "[i for i,r in enumerate(h) if r['path']=='/messaging'][0] < [i for i,r in enumerate(h) if r['path']=='/users' and r['json']['user_provider_id']=='ACoAA1'][0]"

# ---- chats ------------------------------------------------------------------------
call POST /api/v1/chats -F account_id=A -F attendees_ids=ACoAA1 -F 'text=Hello Alice, thanks for connecting'
expect_status 201 "multipart chat start"
check "ChatStarted reuses the note chat" "j['object']=='ChatStarted' and j['chat_id']=='$NOTE_CHAT' and len(j['message_id'])>0"
call POST /api/v1/chats -F account_id=A -F attendees_ids=ACoCAROL -F 'text=Hi'
err_is 422 errors/no_connection_with_recipient "chat with a non-relation"
check "no_connection title" "j['title']=='Recipient cannot be reached' and j['detail']=='The recipient appears not to be first degree connection'"
call POST /api/v1/chats -F account_id=A -F attendees_ids=ACoAA1
err_is 400 errors/missing_parameters "chat without text"
call POST /api/v1/chats -F account_id=A -F 'text=Hi'
err_is 400 errors/missing_parameters "chat without attendees"
call POST /api/v1/chats -F account_id=A -F attendees_ids=ACoAA1 -F attendees_ids=ACoBOB -F 'text=group'
expect_status 400 "group chat refused"
json POST /api/v1/chats '{"account_id":"A","attendees_ids":["ACoBOB"],"text":"Hi Bob (JSON)"}'
expect_status 201 "JSON chat start"
BOB_CHAT=$(val "j['chat_id']")
check "new chat for bob" "j['chat_id']!='$NOTE_CHAT'"
call POST /api/v1/chats --data-urlencode account_id=A --data-urlencode attendees_ids=ACoBOB --data-urlencode 'text=Hi Bob (form)'
expect_status 201 "url-encoded chat start"
check "same chat for bob" "j['chat_id']=='$BOB_CHAT'"

call POST "/api/v1/chats/$NOTE_CHAT/messages" -F 'text=Second message' -F account_id=A
expect_status 201 "send in chat"
check "MessageSent" "j['object']=='MessageSent' and len(j['message_id'])>0"
call POST "/api/v1/chats/$NOTE_CHAT/messages" -F 'text=No account'
expect_status 201 "send in chat without account_id"
call POST "/api/v1/chats/$NOTE_CHAT/messages" -F 'text=x' -F account_id=OTHER
err_is 403 errors/account_mismatch "send with another account"
call POST /api/v1/chats/NOPE/messages -F 'text=x'
err_is 404 errors/resource_not_found "send in unknown chat"
call GET "/api/v1/chats/$NOTE_CHAT/messages"
expect_status 200 "list messages"
check "MessageList newest first" "j['object']=='MessageList' and j['cursor'] is None and [m['text'] for m in j['items']]==['No account','Second message','Hello Alice, thanks for connecting','Hi Alice, let us connect']"
check "Message item" "(lambda m: m['object']=='Message' and m['chat_id']=='$NOTE_CHAT' and m['sender_id']=='ACoOWNA' and m['is_sender']==1 and m['timestamp'].endswith('Z') and len(m['id'])>0)(j['items'][0])"
call GET "/api/v1/chats/$NOTE_CHAT/messages?limit=2"
check "messages page" "len(j['items'])==2 and isinstance(j['cursor'],str)"
call GET /api/v1/chats/NOPE/messages
err_is 404 errors/resource_not_found "messages of unknown chat"

# ---- replies ------------------------------------------------------------------------
ctl POST /_mock/clock '{"advance_ms":7300000}'
expect_status 200 "advance clock past alice's reply"
call GET "/api/v1/chats/$NOTE_CHAT/messages"
check "alice replied once" "[m['text'] for m in j['items']][0]=='Thanks!' and j['items'][0]['is_sender']==0 and j['items'][0]['sender_id']=='ACoAA1' and len(j['items'])==5"
call GET "/api/v1/chats/$BOB_CHAT/messages"
check "bob never replies" "all(m['is_sender']==1 for m in j['items'])"
wait_deliveries
hook_check "reply webhook from alice" "any(r['json'].get('message')=='Thanks!' and r['json']['sender']['attendee_provider_id']=='ACoAA1' and r['json']['sender']['attendee_name']=='Alice Smith' for r in h if r['path']=='/messaging')"
hook_check "own sent messages echoed" "any(r['json'].get('message')=='Second message' and r['json']['sender']['attendee_provider_id']=='ACoOWNA' for r in h if r['path']=='/messaging')"

# ---- faults -----------------------------------------------------------------------
ctl POST /_mock/faults '{"method":"POST","path_prefix":"/api/v1/users/invite","status":429,"type":"errors/too_many_requests","title":"Too many requests","count":2}'
expect_status 200 "register 429 fault"
json POST /api/v1/users/invite '{"provider_id":"ACoCAROL","account_id":"A"}'
err_is 429 errors/too_many_requests "fault 429 #1"
json POST /api/v1/users/invite '{"provider_id":"ACoCAROL","account_id":"A"}'
err_is 429 errors/too_many_requests "fault 429 #2"
ctl GET "/_mock/state?account_id=A"
check "faulted requests created nothing" "[i['provider_id'] for i in j['invitations']]==['ACoUNKNOWN1']"
json POST /api/v1/users/invite '{"provider_id":"ACoCAROL","account_id":"A"}'
expect_status 201 "fault used up"

ctl POST /_mock/faults '{"path_prefix":"/api/v1/users/relations","drop":true}'
curl -sS -o /dev/null -H "X-API-KEY: $KEY" "$BASE/api/v1/users/relations?account_id=A" 2>/dev/null
RC=$?
[ "$RC" -eq 52 ] || [ "$RC" -eq 56 ] && pass || fail "drop fault: curl exit $RC, expected 52/56"
call GET "/api/v1/users/relations?account_id=A"
expect_status 200 "after drop fault"

ctl POST /_mock/faults '{"path_prefix":"/api/v1/users/relations","delay_ms":800}'
curl -sS -o "$TMP/slow" -w '%{http_code} %{time_total}\n' -H "X-API-KEY: $KEY" "$BASE/api/v1/users/relations?account_id=A" >"$TMP/slow.meta" &
SLOW=$!
sleep 0.15
FAST=$(curl -sS -o /dev/null -w '%{time_total}' -H "X-API-KEY: $KEY" "$BASE/api/v1/webhooks")
wait $SLOW
"$PY" -c "import sys; sys.exit(0 if float('$FAST') < 0.4 else 1)" && pass || fail "fast request during a delay took $FAST s"
read -r SLOW_CODE SLOW_T <"$TMP/slow.meta"
[ "$SLOW_CODE" = 200 ] && pass || fail "delayed request status $SLOW_CODE"
"$PY" -c "import sys; sys.exit(0 if float('$SLOW_T') >= 0.75 else 1)" && pass || fail "delayed request took only $SLOW_T s"
BODY=$(cat "$TMP/slow")
check "delayed answer is normal" "j['object']=='UserRelationsList'"

ctl POST /_mock/faults '{"method":"GET","path_prefix":"/api/v1/users/invite/sent","status":503,"delay_ms":300}'
call GET "/api/v1/users/invite/sent?account_id=A"
err_is 503 errors/service_unavailable "delayed 503"

ctl POST /_mock/faults '{"path_prefix":"/api/v1/webhooks","garbage":true}'
call GET /api/v1/webhooks
expect_status 200 "garbage status"
"$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$TMP/body" 2>/dev/null && fail "garbage body parsed as JSON" || pass

ctl POST /_mock/faults '{"path_prefix":"/api/v1/webhooks","html":true}'
STATUS=$(curl -sS -o "$TMP/body" -w '%{http_code} %{content_type}' -H "X-API-KEY: $KEY" "$BASE/api/v1/webhooks")
case "$STATUS" in "502 text/html"*) pass ;; *) fail "html fault: $STATUS" ;; esac
grep -q '<html>' "$TMP/body" && pass || fail "html fault body"

ctl POST /_mock/faults '[{"status":500,"count":-1,"path_prefix":"/api/v1/chats"},{"status":504,"count":1}]'
ctl GET /_mock/faults
check "faults listed" "len(j['items'])==2 and j['items'][0]['count']==-1"
call GET "/api/v1/chats/$NOTE_CHAT/messages"
err_is 500 errors/unexpected_error "forever fault #1"
call GET "/api/v1/chats/$NOTE_CHAT/messages"
err_is 500 errors/unexpected_error "forever fault #2"
call GET /api/v1/webhooks
err_is 504 errors/request_timeout "any-path fault"
ctl DELETE /_mock/faults
check "faults cleared" "j['items']==[]"
call GET "/api/v1/chats/$NOTE_CHAT/messages"
expect_status 200 "after clearing faults"
ctl POST /_mock/faults '{"count":3}'
err_is 400 errors/invalid_parameters "fault with no effect"
ctl POST /_mock/faults '{"after":true,"delay_ms":10}'
err_is 400 errors/invalid_parameters "\"after\" with nothing to replace the answer"

# "after": the request takes effect, then its answer is lost (reset, or a bad answer)
ctl POST /_mock/faults '{"method":"POST","path_prefix":"/api/v1/users/invite","drop":true,"after":true}'
curl -sS -o /dev/null -H "X-API-KEY: $KEY" -H 'Content-Type: application/json' \
    -d '{"provider_id":"ACoAFTER1","account_id":"A"}' "$BASE/api/v1/users/invite" 2>/dev/null
RC=$?
[ "$RC" -eq 52 ] || [ "$RC" -eq 56 ] && pass || fail "after+drop fault: curl exit $RC, expected 52/56"
ctl POST /_mock/faults '{"method":"POST","path_prefix":"/api/v1/users/invite","status":500,"after":true}'
json POST /api/v1/users/invite '{"provider_id":"ACoAFTER2","account_id":"A"}'
err_is 500 errors/unexpected_error "after+500: the error is answered"
ctl GET "/_mock/state?account_id=A"
check "after: both invitations exist" "{'ACoAFTER1','ACoAFTER2'} <= {i['provider_id'] for i in j['invitations']}"
json POST /api/v1/users/invite '{"provider_id":"ACoAFTER2","account_id":"A"}'
err_is 422 errors/already_invited_recently "after: a resend finds the invitation"

# ---- disconnected account and held webhooks ----------------------------------------
ctl POST /_mock/people '{"provider_id":"ACoERIN","public_identifier":"erin-e","first_name":"Erin","last_name":"E","accept_after_s":10}'
json POST /api/v1/users/invite '{"provider_id":"ACoERIN","account_id":"A","message":"Hi Erin"}'
expect_status 201 "invite erin"
ctl POST /_mock/accounts '{"account_id":"A","status":"disconnected"}'
expect_status 200 "disconnect A"
check "account listed" "j['items'][0]['status']=='disconnected'"
call GET "/api/v1/users/relations?account_id=A"
err_is 401 errors/disconnected_account "disconnected: query"
check "disconnected body" "j=={'status':401,'type':'errors/disconnected_account','title':'Disconnected account','detail':'The account appears to be disconnected from the provider service.'}"
json POST /api/v1/users/invite '{"provider_id":"ACoBOB","account_id":"A"}'
err_is 401 errors/disconnected_account "disconnected: JSON body"
call POST /api/v1/chats -F account_id=A -F attendees_ids=ACoAA1 -F 'text=x'
err_is 401 errors/disconnected_account "disconnected: multipart field"
call POST "/api/v1/chats/$NOTE_CHAT/messages" -F 'text=x'
err_is 401 errors/disconnected_account "disconnected: chat owner"
call GET "/api/v1/users/relations?account_id=B"
expect_status 200 "other accounts unaffected"
ctl POST /_mock/clock '{"advance_ms":20000}'
ctl GET "/_mock/state?account_id=A"
check "erin accepted while disconnected" "j['relations_count']==3 and j['account']['held_webhooks']==2"
wait_deliveries
hook_check "CREDENTIALS status webhook" "[r['json'] for r in h if r['path']=='/status']=={'AccountStatus':{'account_id':'A','account_type':'LINKEDIN','message':'CREDENTIALS'}} or [r['json'] for r in h if r['path']=='/status']==[{'AccountStatus':{'account_id':'A','account_type':'LINKEDIN','message':'CREDENTIALS'}}]"
hook_check "no erin webhook while disconnected" "not any(r['json'] and r['json'].get('user_provider_id')=='ACoERIN' for r in h)"
ctl POST /_mock/accounts '{"account_id":"A","status":"OK"}'
expect_status 200 "reconnect A"
wait_deliveries
hook_check "RECONNECTED status webhook" "[r['json']['AccountStatus']['message'] for r in h if r['path']=='/status']==['CREDENTIALS','RECONNECTED']"
hook_check "held erin webhooks replayed" "any(r['json'].get('user_provider_id')=='ACoERIN' for r in h if r['path']=='/users') and any(r['json'].get('message')=='Hi Erin' for r in h if r['path']=='/messaging')"
call GET "/api/v1/users/relations?account_id=A"
expect_status 200 "reconnected A works"
ctl POST /_mock/accounts '{"account_id":"Z","provider_id":"ACoZZZ","status":"OK"}'
check "provider id settable" "j['items'][0]['provider_id']=='ACoZZZ'"
ctl POST /_mock/accounts '{"account_id":"Z","status":"weird"}'
err_is 400 errors/invalid_parameters "bad account status"

# ---- webhook retries and arbitrary emits --------------------------------------------
json POST /api/v1/webhooks "{\"source\":\"users\",\"request_url\":\"$HOOK/fail2\",\"name\":\"Flaky\",\"account_ids\":[\"C\"]}"
expect_status 201 "flaky webhook for account C"
ctl POST /_mock/people '{"provider_id":"ACoFRANK","first_name":"Frank","last_name":"F","public_identifier":"frank-f","accept_after_s":0}'
json POST /api/v1/users/invite '{"provider_id":"ACoFRANK","account_id":"C"}'
expect_status 201 "invite frank from C"
json POST /api/v1/users/invite '{"provider_id":"ACoFRANK","account_id":"A"}'
expect_status 201 "invite frank from A"
sleep 0.3
wait_deliveries
ctl GET "/_mock/deliveries?since=0"
check "retried until 200" "[(d['attempt'],d['status'],d['ok']) for d in j['items'] if d['url'].endswith('/fail2')]==[(1,500,False),(2,500,False),(3,200,True)]"
check "delivery record" "all(set(d)>={'seq','at_ms','url','event','attempt','status','error','payload'} for d in j['items'])"
hook_check "flaky hook only gets account C" "all(r['json']['account_id']=='C' for r in h if r['path'].startswith('/fail2'))"
NEXT=$(val "j['next']")

ctl POST /_mock/webhooks/emit "{\"url\":\"$HOOK/custom\",\"payload\":{\"event\":\"message_reaction\",\"x\":1}}"
expect_status 200 "emit to url"
check "queued 1" "j['queued']==1"
ctl POST /_mock/webhooks/emit '{"payload":{"event":"message_read","y":2}}'
check "emit to all webhooks" "j['queued']==4"
wait_deliveries
hook_check "custom payload delivered as is" "[r['json'] for r in h if r['path']=='/custom']==[{'event':'message_reaction','x':1}]"
hook_check "emit reached every webhook" "len([r for r in h if r['json']=={'event':'message_read','y':2}])==4"
ctl GET "/_mock/deliveries?since=$NEXT"
check "deliveries since" "len(j['items'])>=5 and all(d['seq']>=$NEXT for d in j['items'])"
CLOSED=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
ctl POST /_mock/webhooks/emit "{\"url\":\"http://127.0.0.1:$CLOSED/x\",\"payload\":{\"event\":\"t\"}}"
sleep 0.6
ctl GET /_mock/deliveries
check "connection failures are retried" "len([d for d in j['items'] if ':$CLOSED/' in d['url'] and d['status'] is None and d['error']])>=2"

# ---- bulk relations ---------------------------------------------------------------
NEWEST=$((T0 - 86400000))
START=$(date +%s%N)
ctl POST /_mock/relations "{\"account_id\":\"B\",\"count\":30000,\"newest_ms\":$NEWEST,\"spacing_ms\":60000}"
END=$(date +%s%N)
expect_status 200 "bulk relations"
check "30000 created" "j['created']==30000 and j['relations_count']==30000"
[ $(((END - START) / 1000000)) -lt 2000 ] && pass || fail "bulk insert took $(((END - START) / 1000000)) ms"
CURSOR=""
TOTAL=0
PAGES=0
LASTTS=""
while :; do
    if [ -z "$CURSOR" ]; then call GET "/api/v1/users/relations?account_id=B&limit=1000"; else call GET "/api/v1/users/relations?account_id=B&limit=1000" -G --data-urlencode "cursor=$CURSOR"; fi
    [ "$STATUS" = 200 ] || { fail "relations page $PAGES: $STATUS"; break; }
    OUT=$("$PY" -c "
import json,sys
j=json.load(open(sys.argv[1])); ts=[i['created_at'] for i in j['items']]
assert ts==sorted(ts,reverse=True)
print(len(ts), j['cursor'] or '-', ts[0] if ts else '', ts[-1] if ts else '')" "$TMP/body")
    read -r N CURSOR FIRST LAST <<<"$OUT"
    [ "$CURSOR" = "-" ] && CURSOR=""
    if [ -n "$LASTTS" ] && [ "$FIRST" -ge "$LASTTS" ]; then fail "pages overlap"; fi
    [ -z "$LASTTS" ] && { [ "$FIRST" = "$NEWEST" ] && pass || fail "newest bulk relation $FIRST != $NEWEST"; }
    LASTTS=$LAST
    TOTAL=$((TOTAL + N))
    PAGES=$((PAGES + 1))
    [ -z "$CURSOR" ] && break
    [ $PAGES -gt 40 ] && { fail "too many pages"; break; }
done
[ "$TOTAL" = 30000 ] && [ "$PAGES" = 30 ] && pass || fail "paged $TOTAL relations in $PAGES pages"
[ "$LASTTS" = $((NEWEST - 29999 * 60000)) ] && pass || fail "oldest bulk relation $LASTTS"
call GET "/api/v1/users/ACoBULK1?account_id=B"
check "bulk people exist" "j['is_relationship'] is True and j['public_identifier']=='bulk-1'"
ctl POST /_mock/relations '{"account_id":"B","provider_id":"ACoAA1"}'
check "single relation" "j['created']==1 and j['relations_count']==30001"
call GET "/api/v1/users/relations?account_id=B&limit=1"
check "new single relation is newest" "j['items'][0]['member_id']=='ACoAA1'"
call GET "/api/v1/users/relations?account_id=B&cursor=%%%"
err_is 400 errors/invalid_parameters "bad cursor"

# ---- log, stats, config -------------------------------------------------------------
ctl GET "/_mock/log?since=0&limit=100000"
expect_status 200 "log"
check "log entries" "len(j['items'])>50 and j['next']==j['items'][-1]['seq']+1 and j['items'][0]['seq']==1"
check "log entry shape" "set(j['items'][0])>={'seq','at_ms','method','path','query','account_id','body','status','fault'}"
check "multipart body logged as fields" "any(e['path']=='/api/v1/chats' and e['body']=={'account_id':'A','attendees_ids':['ACoAA1','ACoBOB'],'text':'group'} for e in j['items'])"
check "JSON body logged parsed" "any(e['body']=={'provider_id':'ACoBOB','account_id':'A'} and e['status']==201 for e in j['items'])"
check "faults flagged" "len([e for e in j['items'] if e['fault']])>=10 and any(e['fault'] and e['status']==0 for e in j['items'])"
check "401s logged" "any(e['status']==401 and e['account_id']=='A' for e in j['items'])"
LOGNEXT=$(val "j['next']")
ctl GET "/_mock/log?since=$LOGNEXT"
check "log since" "j['items']==[] and j['next']==$LOGNEXT"
ctl GET /_mock/stats
expect_status 200 "stats"
check "stats" "j['requests']>=$((LOGNEXT - 1)) and j['by_route']['POST /api/v1/users/invite']>=10 and j['by_status']['201']>=10 and j['by_status']['429']==2"
REQS=$(val "j['requests']")
ctl POST /_mock/config '{"log":false}'
check "config log off" "j['log'] is False"
call GET /api/v1/webhooks
ctl GET "/_mock/log?since=$LOGNEXT"
check "log disabled" "j['items']==[]"
ctl GET /_mock/stats
check "counters still count" "j['requests']==$REQS+1"
ctl POST /_mock/config '{"log":true}'

# ---- reset ------------------------------------------------------------------------------
ctl POST /_mock/reset
expect_status 200 "reset"
ctl GET "/_mock/state?account_id=A"
check "state cleared" "j['account'] is None and j['invitations']==[] and j['relations_count']==0"
call GET /api/v1/webhooks
check "webhooks cleared" "j['items']==[]"
ctl GET /_mock/faults
check "faults cleared by reset" "j['items']==[]"
ctl GET "/_mock/log?since=0"
check "log restarted" "len(j['items'])==1 and j['items'][0]['seq']==1"
ctl GET /_mock/clock
"$PY" -c "import sys,time; sys.exit(0 if abs($(val "j['now_ms']") - time.time()*1000) < 5000 else 1)" && pass || fail "clock offset not reset"
call GET "/api/v1/users/alice-smith?account_id=A"
err_is 404 errors/resource_not_found "people cleared"

# ---- shutdown ----------------------------------------------------------------------------
kill -TERM "$MOCK_PID"
wait "$MOCK_PID"
RC=$?
MOCK_PID=""
[ "$RC" = 0 ] && pass || fail "mock exit status after SIGTERM: $RC"

echo "mock_smoke: $PASSES checks passed, $FAILS failed"
[ "$FAILS" = 0 ]
