// The webhook benchmark's peer (scripts/bench-webhook): a minimal Matrix
// appservice on npm `matrix-appservice` (the transaction core of
// matrix-org's matrix-appservice-bridge) that stores every pushed event in
// the same DynamoDB emulator as the bridge, through @aws-sdk/client-dynamodb.
// As the library is made to be used, it acknowledges a transaction before
// its events are stored (it emits them and answers 200).
//
// Item: pk "PEER#<room id>", sk "<event id>", the event as JSON in `event`.
// Settings: PEER_PORT, BRIDGE_TABLE, MATRIX_HS_TOKEN, AWS_ENDPOINT_URL,
// AWS_REGION and credentials (those of .local/stack.env).
"use strict";

const { AppService } = require("matrix-appservice");
const { DynamoDBClient, PutItemCommand } = require("@aws-sdk/client-dynamodb");

const table = process.env.BRIDGE_TABLE;
const port = Number(process.env.PEER_PORT);
if (!table || !port || !process.env.MATRIX_HS_TOKEN) {
  console.error("peer: BRIDGE_TABLE, PEER_PORT and MATRIX_HS_TOKEN are required");
  process.exit(2);
}
const dynamodb = new DynamoDBClient({});
const appservice = new AppService({ homeserverToken: process.env.MATRIX_HS_TOKEN });
let stored = 0;
let failed = 0;

appservice.on("event", (event) => {
  dynamodb
    .send(
      new PutItemCommand({
        TableName: table,
        Item: {
          pk: { S: `PEER#${event.room_id}` },
          sk: { S: event.event_id },
          event: { S: JSON.stringify(event) },
        },
      }),
    )
    .then(
      () => stored++,
      (err) => {
        failed++;
        console.error(`peer: ${event.event_id} not stored: ${err}`);
      },
    );
});

process.on("SIGTERM", () => {
  console.error(`peer: ${stored} events stored, ${failed} failed`);
  process.exit(0);
});

appservice.listen(port, "127.0.0.1").then(() => console.error(`peer: listening on 127.0.0.1:${port}`));
