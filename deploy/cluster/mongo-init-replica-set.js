// One-shot initiation of replica set rs0 (service mongo-init in docker-compose.cluster.yml):
//   mongosh --nodb --quiet /scripts/mongo-init-replica-set.js
// Idempotent: a set that any member already knows is left as it is. Exits 0 once the set
// has a primary, 1 when that does not happen within the deadline.
const SET_NAME = "rs0";
const MEMBERS = ["mongo-1:27017", "mongo-2:27017", "mongo-3:27017"];
const NOT_YET_INITIALIZED = 94;
const ALREADY_INITIALIZED = 23;
const deadline = Date.now() + 120 * 1000;

function waitFor(what, attempt) {
  for (;;) {
    try {
      const result = attempt();
      if (result) return result;
    } catch (error) {
      if (Date.now() > deadline) throw error;
    }
    if (Date.now() > deadline) {
      print(`mongo-init: gave up waiting for ${what}`);
      quit(1);
    }
    sleep(1000);
  }
}

function admin(host) {
  return new Mongo(`mongodb://${host}/?directConnection=true&serverSelectionTimeoutMS=2000`)
    .getDB("admin");
}

// replSetGetStatus answers "not yet initialized" (94) on a member without a config; mongosh
// throws on a failed command, older shells return it: handle both.
function knowsTheSet(db) {
  try {
    const status = db.runCommand({ replSetGetStatus: 1 });
    if (status.ok === 1) return true;
    if (status.code === NOT_YET_INITIALIZED) return false;
    throw new Error(tojson(status));
  } catch (error) {
    if (error.code === NOT_YET_INITIALIZED) return false;
    throw error;
  }
}

// Every member must answer before the set is initiated with all three.
const databases = MEMBERS.map((host) =>
  waitFor(host, () => {
    const db = admin(host);
    return db.runCommand({ ping: 1 }).ok === 1 ? db : null;
  })
);

if (databases.some(knowsTheSet)) {
  print(`mongo-init: replica set ${SET_NAME} already initiated`);
} else {
  const config = { _id: SET_NAME, members: MEMBERS.map((host, i) => ({ _id: i, host })) };
  try {
    const result = databases[0].runCommand({ replSetInitiate: config });
    if (result.ok !== 1 && result.code !== ALREADY_INITIALIZED) throw new Error(tojson(result));
  } catch (error) {
    if (error.code !== ALREADY_INITIALIZED) throw error;
  }
  print(`mongo-init: initiated replica set ${SET_NAME} with ${MEMBERS.join(", ")}`);
}

const primary = waitFor("a primary", () => databases[0].runCommand({ hello: 1 }).primary);
print(`mongo-init: ${SET_NAME} primary is ${primary}`);
